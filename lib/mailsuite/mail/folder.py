"""One open mailbox as `mail` sees it: numbered messages and what was done to them.

The store (`mailsuite.mbox.Mailbox`) knows offsets, flags and UIDs; this
module adds the session's marks (read, deleted, saved, preserved, bound for
~/mbox) and, on `quit`, turns them into one locked update: read messages are
appended to ~/mbox first (fsynced by the store), and only then removed from
the spool with `Mailbox.sync`, so a crash between the two duplicates a
message instead of losing it.  Messages that arrived while `mail` was open
are not ours to touch and `sync` leaves them as they are.

Messages are shown as stored, as IMAP and POP3 serve them (no From_
unquoting), and are read under a read lock after checking that they are
still where they were indexed (another program may have rewritten the
file); copies go to other mailboxes exactly as stored.
"""

import re
from dataclasses import dataclass

from ..store.mailbox import Mailbox, MailboxError
from . import mime_view

# Header fields the summary needs (with their folded continuation lines); the rest is read on demand.
_SUMMARY_FIELD = re.compile(rb"^(from|subject|date|message-id)[ \t]*:(.*(?:\n[ \t].*)*)", re.I | re.M)


@dataclass(eq=False)
class MessageState:
    number: int
    stored: object                 # mbox.Message
    sender: str = ""
    subject: str = ""
    date: str = ""
    message_id: str = ""
    lines: int | None = None       # counted when first shown: it needs the whole message
    new: bool = False
    read: bool = False
    flagged: bool = False
    answered: bool = False         # replied to (X-Status: A, IMAP \\Answered)
    deleted: bool = False
    preserved: bool = False        # `pre`/`ho`: stays in the spool whatever else
    saved: bool = False            # `s`/`w`: leaves the spool on quit unless keepsave
    to_mbox: bool = False          # `mb`: goes to ~/mbox on quit
    gone: bool = False             # removed by another program while we were open

    def mark_read(self):
        """Shown, piped, saved, answered...: read, and no longer new."""
        self.read = True
        self.new = False

    @property
    def uid(self):
        return self.stored.uid

    @property
    def size(self):
        return self.stored.size


class Folder:
    """A mailbox file opened for reading; `system` when it is the user's spool."""

    def __init__(self, path, cfg, owner, *, system):
        self.path = path
        self.cfg = cfg
        self.owner = owner
        self.system = system
        self.store = open_mailbox(path, cfg, owner)
        self.messages = []
        self._stamp = None             # the file's key when indexed: unchanged means offsets still hold

    def open(self):
        """Index the mailbox; a missing file is an empty folder.

        The scan happens under a lock, after whatever a killed process left
        half done was finished, so what we index is consistent.
        """
        if not self.store.exists:
            return self
        with self.store.reading():
            index = self.store.scan()
            self._stamp = self.store.key()
            self.messages = [self._state(n, m) for n, m in enumerate(index.messages, 1)]
        return self

    def close(self):
        self.store.close()

    def _state(self, number, stored):
        head = self.store.read(stored, stored.header, stored.body)
        fields = _header_fields(head)
        state = MessageState(number, stored,
                             sender=mime_view.decode_header(fields.get(b"from")) or stored.sender,
                             subject=mime_view.decode_header(fields.get(b"subject")),
                             date=fields.get(b"date", ""), message_id=fields.get(b"message-id", ""))
        flags = stored.flags
        state.read = "R" in flags
        state.new = "R" not in flags and "O" not in flags
        state.flagged = "F" in flags
        state.answered = "A" in flags
        return state

    def read(self, state):
        """The message as stored: headers, blank line, body."""
        with self.store.reading():
            return self.store.read(self._located(state))

    def _located(self, state):
        """STATE's place in the file, found again if another program rewrote the file meanwhile (under a lock).

        Appends never move a message, but an IMAP client's expunge or a flag
        change that outgrows its padding does; reading at a stale offset
        would show the wrong bytes.  A message is known by its offset, From_
        line, X-UID and extent; when those are not there, the file is
        indexed afresh.
        """
        if self.store.key() != self._stamp and not self.store.still_there(state.stored):
            self._relocate()
        if state.gone:
            raise MailboxError(f"message {state.number} was removed by another program")
        return state.stored

    def changed(self):
        """Whether the file changed since we indexed it (new mail, or another program's rewrite)."""
        return self.store.exists and self.store.key() != self._stamp

    def incorporate(self):
        """Number the messages that arrived since start-up after ours (`inc`); returns how many."""
        now, known = self._relocate()
        arrived = [s for i, s in enumerate(now) if i not in known]
        for stored in arrived:
            self.messages.append(self._state(len(self.messages) + 1, stored))
        return len(arrived)

    def _relocate(self):
        """Index the file afresh and find our messages in it; returns (messages now, positions ours hold).

        Messages that arrived meanwhile are not added: until `inc` they are
        not part of the session, and quit leaves them as they are.
        """
        with self.store.reading():
            now = self.store.scan().messages
            self._stamp = self.store.key()
            found = self._find(now)
        for m in self.messages:
            if m.number in found:
                m.stored = now[found[m.number]]
            else:
                m.gone = True
        return now, set(found.values())

    def line_count(self, state):
        if state.lines is None:
            with self.store.reading():
                stored = self._located(state)
                count, offset = 0, stored.header
                while offset < stored.end:
                    chunk = self.store.read(stored, offset, min(offset + (1 << 20), stored.end))
                    if not chunk:
                        break
                    count += chunk.count(b"\n")
                    offset += len(chunk)
            state.lines = count
        return state.lines

    def count_new(self):
        return sum(1 for m in self.messages if m.new and not m.deleted)

    def count_unread(self):
        return sum(1 for m in self.messages if not m.read and not m.deleted)

    # --- leaving the folder ---

    def quit(self, mbox_path, mbox_owner, *, hold, keepsave):
        """Apply the session's marks; returns (moved to mbox, kept in folder) counts.

        Under the folder's lock: copy the messages bound for ~/mbox there
        first (if that fails, the folder is untouched), then give out any
        missing UIDs, then one `sync` with the flags and removals.  UIDs are
        given out only here, when we write anyway, so reading and `exit`
        leave the file exactly as it was.
        """
        if not self.messages:
            return 0, 0
        with self.store.locked():
            before = self.store.scan().messages
            found = self._find(before)
            fates = {n: self._fate(self.messages[n - 1], hold, keepsave) for n in found}
            outgoing = [(before[found[n]], self.messages[n - 1]) for n, fate in fates.items() if fate == "mbox"]
            if outgoing:
                append_messages(mbox_path, self.cfg, mbox_owner,
                                [(self.store.read(s), s, frozenset("RO") | _answered(m)) for s, m in outgoing])
            after = self.store.sync().messages if any(not s.uid for s in before) else before
            if len(after) != len(before):
                raise MailboxError(f"{self.path}: changed while being updated")
            flags = {after[found[n]].uid: self._kept_flags(self.messages[n - 1])
                     for n, fate in fates.items() if fate == "keep"}
            expunge = [after[found[n]].uid for n, fate in fates.items() if fate != "keep"]
            self.store.sync(flags=flags, expunge=expunge)
        return len(outgoing), len(flags)

    def _fate(self, m, hold, keepsave):
        """'keep', 'drop' or 'mbox': mailx's rules for the end of a session."""
        if m.deleted and not m.preserved:
            return "drop"
        if not self.system or m.preserved:
            return "keep"
        if m.saved and not keepsave:
            return "drop"
        if m.to_mbox or (m.read and not hold):
            return "mbox"
        return "keep"

    def _find(self, stored):
        """Our message numbers -> positions in STORED, the file's messages now.

        A message is found by its UID, or, when it had none at start-up, by
        its offset and From_ line, which appends do not move; failing that
        (another program rewrote the file and gave out UIDs) by its From_
        line and Message-ID.  A message that is no longer there (another
        client expunged it) is left out.
        """
        by_uid = {s.uid: i for i, s in enumerate(stored) if s.uid}
        by_place = {(s.start, s.from_line): i for i, s in enumerate(stored) if not s.uid}
        found, by_identity = {}, None
        for m in self.messages:
            i = by_uid.get(m.uid) if m.uid else by_place.get((m.stored.start, m.stored.from_line))
            if i is None and not m.uid and m.message_id:
                if by_identity is None:         # read every header once, only when it is needed
                    by_identity = self._identities(stored)
                i = by_identity.pop((m.stored.from_line, m.message_id), None)
            if i is not None:
                found[m.number] = i
        return found

    def _identities(self, stored):
        identities = {}
        for i, s in enumerate(stored):
            message_id = _header_fields(self.store.read(s, s.header, s.body)).get(b"message-id")
            if message_id:
                identities.setdefault((s.from_line, message_id), i)
        return identities

    def _kept_flags(self, m):
        letters = set(m.stored.flags) | {"O"} | _answered(m)
        letters.discard("R")
        if m.read:
            letters.add("R")
        return frozenset(letters), m.stored.keywords


def _answered(m):
    return {"A"} if m.answered else set()


def append_messages(path, cfg, owner, items, *, sender="MAILER-DAEMON"):
    """Append (raw bytes, stored Message or None, flags) items to the mbox at PATH under its lock.

    The bytes are stored exactly (with a Content-Length).  A stored message
    keeps its From_ line's sender and date; a new one (a sent copy, a dead
    letter) gets SENDER and the present time.
    """
    target = open_mailbox(path, cfg, owner)
    if not target.exists:
        target.create(0o600)
    with target, target.locked():
        for raw, stored, flags in items:
            if stored is not None:
                target.append(raw, sender=stored.sender, date=stored.date, flags=flags, keywords=stored.keywords)
            else:
                target.append(raw, sender=sender, flags=flags)


def open_mailbox(path, cfg, owner):
    """The store for PATH, owned by OWNER (None: unchecked); in the sandbox every user is one uid."""
    return Mailbox(path, cfg, owner=owner, check_owner=not cfg.mailsuite.sandbox)


def _header_fields(head):
    """The summary's header fields from a header block, unfolded, as str (the first of each wins)."""
    fields = {}
    for match in _SUMMARY_FIELD.finditer(head):
        name = match.group(1).lower()
        if name not in fields:
            fields[name] = _header_text(b" ".join(match.group(2).split()))
    return fields


def _header_text(data):
    """Raw header bytes as text: UTF-8 when they are, else Latin-1 (which never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
