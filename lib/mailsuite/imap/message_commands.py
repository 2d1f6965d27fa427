"""The IMAP commands on the selected mailbox's messages (RFC 3501 6.4, UIDPLUS, MOVE).

CHECK, CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY and MOVE, in
their UID forms too.  Message content is read in batches under a read
lock and copied out before it is sent (LOCK_BATCH_BYTES at a time), so a
client that stops reading never holds up deliveries; flag changes are
written as changes to what the file holds (selected.py).
"""

from ..store import mailbox as mbox
from . import parser
from .mailboxes import MailboxNameError, NoSuchMailbox
from .selected import SEEN, SYSTEM_FLAG_NAMES, FlagChange, flag_names, split_flags
from .states import EXPUNGE_ISSUED, Bad, No

LOCK_BATCH_BYTES = 4 << 20  # content read (and sent) under one hold of the mailbox lock


class MessageCommands:
    """The handlers of these commands; mixed into Session (session.py)."""

    def cmd_check(self, command):
        self.selected.write_back()

    def cmd_close(self, command):
        if not self.selected.readonly:
            self.selected.expunge()
        self.unselect()

    def cmd_unselect(self, command):
        self.unselect()

    def cmd_expunge(self, command):
        if self.selected.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        only = None
        if command.uid:
            only = {uid for _, uid in self.selected.resolve(command.args[0], True)}
        self.selected.expunge(only)

    def targets(self, command, sequence):
        try:
            return self.selected.resolve(sequence, command.uid)
        except IndexError:
            raise Bad("message number out of range") from None

    def cmd_fetch(self, command):
        sequence, atts = command.args
        selected = self.selected
        wanted = list(atts)
        if command.uid and not any(a.name == "UID" for a in wanted):
            wanted.insert(0, parser.FetchAtt("UID"))
        needs_content = any(a.name not in ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE") for a in wanted)
        sets_seen = not selected.readonly and any(a.sets_seen for a in wanted)
        targets = self.targets(command, sequence)
        self.announce_flags()
        if [a.name for a in wanted] in (["UID", "FLAGS"], ["FLAGS", "UID"], ["FLAGS"]):
            self._fetch_flags(targets, wanted[0].name == "UID", len(wanted) == 2)
            gone = False
        elif needs_content:
            gone = False
            for batch, copies in self.read_batches(targets, copied=True):
                try:
                    gone |= self._fetch_each(batch, wanted, sets_seen, copies)
                finally:
                    copies.close()
        else:
            gone = self._fetch_each(targets, wanted, sets_seen, selected.box)
        selected.write_back()
        if gone:
            return EXPUNGE_ISSUED

    def announce_flags(self, keywords=()):
        """`* FLAGS` and PERMANENTFLAGS first, when a FETCH is about to show a keyword not announced yet."""
        for parts in self.selected.flags_news(keywords):
            self.send(*parts)

    def read_batches(self, targets, *, copied=False):
        """Targets in batches, each read under a read lock with fresh offsets: (batch, where to read them).

        Message offsets are only valid while nobody rewrites the file, but a
        FETCH of a whole big mailbox must not keep deliveries waiting: the
        lock is let go between batches of about LOCK_BATCH_BYTES.  With
        COPIED the batch's messages are copied out and the lock let go
        before the batch is used, so a client that stops reading never
        holds up deliveries to its mailbox.
        """
        selected = self.selected
        start = 0
        retried = False
        while start < len(targets):
            with selected.box.reading():
                selected.refresh_positions()
                size, end, messages = 0, start, []
                while end < len(targets) and (end == start or size < LOCK_BATCH_BYTES):
                    msg = selected.message(targets[end][1])
                    if msg is not None:
                        size += msg.size
                        messages.append(msg)
                    end += 1
                if not copied:
                    yield targets[start:end], selected.box
                    start = end
                    continue
                try:
                    copies = selected.box.copies(messages)
                except mbox.StaleOffsets:       # changed in a way the file's key did not show: read it again
                    if retried:
                        raise
                    retried = True
                    selected.forget_positions()
                    continue
            yield targets[start:end], copies
            start, retried = end, False

    def _fetch_flags(self, targets, uid_first, with_uid):
        """The commonest FETCH of all (a client syncing flags), without the general machinery."""
        selected = self.selected
        texts = {}
        lines = []
        for seq, uid in targets:  # a message expunged elsewhere, not yet announced, keeps its flags
            letters, keywords = selected.flags_at(seq, uid)
            key = (letters, keywords, uid in selected.recent)
            flags = texts.get(key)
            if flags is None:
                flags = texts[key] = _plain(flag_names(*key))
            if not with_uid:
                lines.append(f"* {seq} FETCH (FLAGS {flags})\r\n")
            elif uid_first:
                lines.append(f"* {seq} FETCH (UID {uid} FLAGS {flags})\r\n")
            else:
                lines.append(f"* {seq} FETCH (FLAGS {flags} UID {uid})\r\n")
            if len(lines) >= 1024:
                self.conn.write("".join(lines).encode("utf-8", "surrogateescape"))
                lines.clear()
        self.conn.write("".join(lines).encode("utf-8", "surrogateescape"))

    def _fetch_each(self, targets, wanted, sets_seen, source):
        """FETCH responses for the targets; True when one was expunged by another session meanwhile."""
        from .fetch import MessageFetcher
        selected = self.selected
        gone = False
        for seq, uid in targets:
            msg = selected.message(uid)
            if msg is None:
                gone = True
                self._fetch_expunged(seq, uid, wanted)
                continue
            fetcher = None
            items = []
            show_flags = False
            if sets_seen and "R" not in selected.flags_of(uid)[0]:
                selected.change_flags(uid, SEEN)
                show_flags = True
            for att in wanted:
                if att.name == "UID":
                    items += ["UID", uid]
                elif att.name == "FLAGS":
                    show_flags = False
                    items += ["FLAGS", selected.imap_flags(uid)]
                else:
                    fetcher = fetcher or MessageFetcher(source, msg)
                    items += [att.response_name(), fetcher.item(att)]
            if show_flags:
                items += ["FLAGS", selected.imap_flags(uid)]
            if fetcher is None:  # UID, FLAGS, INTERNALDATE only: plain text, no serialiser
                self.send_line(f"* {seq} FETCH ({' '.join(map(_plain, items))})")
            else:
                self.send(str(seq), "FETCH", items)
        return gone

    def _fetch_expunged(self, seq, uid, wanted):
        """A message expunged elsewhere but still in the client's view: what is known of it, as Dovecot does.

        UID and FLAGS come from the view; its content is gone, so body
        sections are NIL and the rest is left out; the tagged OK carries
        EXPUNGEISSUED.
        """
        items = []
        for att in wanted:
            if att.name == "UID":
                items += ["UID", uid]
            elif att.name == "FLAGS":
                items += ["FLAGS", self.selected.imap_flags(uid)]
            elif att.section is not None or att.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
                items += [att.response_name(), None]
        self.send(str(seq), "FETCH", items)

    def cmd_store(self, command):
        sequence, store = command.args
        selected = self.selected
        if selected.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        for name in store.flags:
            if not name.startswith("\\") and not mbox.valid_keyword(name):
                raise Bad(f"invalid keyword {name}")
            if name.startswith("\\") and name.lower() not in (f.lower() for f in SYSTEM_FLAG_NAMES):
                raise Bad(f"unknown system flag {name}")
        letters, keywords = split_flags(store.flags)
        change = FlagChange(store.mode, frozenset(letters), tuple(keywords))
        targets = self.targets(command, sequence)
        written = selected.store([uid for _, uid in targets], change, silent=store.silent)
        if not store.silent:
            self.announce_flags(k for _, names in written.values() for k in names)
            for seq, uid in targets:
                if uid in written:
                    items = ["FLAGS", selected.imap_flags(uid)]
                    if command.uid:
                        items = ["UID", uid] + items
                    self.send(str(seq), "FETCH", items)
        if len(written) < len(targets):
            return EXPUNGE_ISSUED

    def cmd_search(self, command):
        from .fetch import MessageFetcher
        from .search import SearchContext, compile_search
        charset, key = command.args
        selected = self.selected
        predicate = compile_search(key)
        needs_content = _search_reads_content(key)
        largest_uid = selected.uids[-1] if selected.uids else 0
        found = []

        def run(batch, source):
            for seq, uid in batch:
                msg = selected.message(uid)
                if msg is None:
                    continue
                letters, keywords = selected.flags_of(uid)
                fetcher = MessageFetcher(source, msg)
                ctx = SearchContext(
                    seq, uid, set(flag_names(letters, keywords)), uid in selected.recent, msg.date,
                    fetcher.size, fetcher.client, len(selected.uids), largest_uid,
                )
                if predicate(ctx):
                    found.append(str(uid if command.uid else seq))

        everything = list(enumerate(selected.uids, 1))
        if needs_content:
            for batch, source in self.read_batches(everything):
                run(batch, source)
        else:
            run(everything, selected.box)
        self.send("SEARCH", *found)

    def cmd_copy(self, command, move=False):
        sequence, target_name = command.args
        selected = self.selected
        targets = [(seq, uid) for seq, uid in self.targets(command, sequence) if selected.present(uid)]
        if move and selected.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        try:
            target = self.store.open_for_append(target_name)
        except (NoSuchMailbox, MailboxNameError):
            raise No("[TRYCREATE] no such mailbox") from None
        if target.path == selected.box.path:  # one Mailbox per file: its locks are re-entrant
            target.close()
            target = selected.box
        selected.write_back()
        source_uids, new_uids = [], []
        # both locks, always in the order of the files' paths: two sessions copying in
        # opposite directions would otherwise each hold one and wait out the lock timeout
        first, second = sorted((selected.box, target), key=lambda box: box.path)
        try:
            with first.locked(), second.locked():
                selected.refresh_positions()
                for _, uid in targets:
                    msg = selected.message(uid)
                    if msg is None:
                        continue
                    data = selected.box.read(msg)
                    new_uids.append(  # the flags the file holds: this session's were written just above
                        target.append(
                            data, sender=msg.sender, date=msg.date, flags=frozenset(msg.flags) - {"O"},
                            keywords=msg.keywords, assign_uid=True,
                        )
                    )
                    source_uids.append(uid)
                uidvalidity = target.scan().uidvalidity
                if move and source_uids:
                    index = selected.box.sync(expunge=source_uids)
                    selected.reload(index)
        finally:
            if target is not selected.box:
                target.close()
        if not source_uids:
            return f"{command.name} completed"
        code = f"[COPYUID {uidvalidity} {_uid_set(source_uids)} {_uid_set(new_uids)}]"
        if move:
            self.send("OK", code, "moved")
            return f"{command.name} completed"
        return f"{code} {command.name} completed"

    def cmd_move(self, command):
        return self.cmd_copy(command, move=True)


def _plain(value):
    """UID numbers, flag lists and atoms as protocol text."""
    if isinstance(value, tuple):
        return "(" + " ".join(value) + ")"
    return str(value)


def _uid_set(uids):
    """Compact UID set text: 1:3,7."""
    out, start, prev = [], None, None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            out.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)


def _search_reads_content(key):
    name = key[0]
    if name in ("AND",):
        return any(_search_reads_content(k) for k in key[1])
    if name in ("OR",):
        return _search_reads_content(key[1]) or _search_reads_content(key[2])
    if name == "NOT":
        return _search_reads_content(key[1])
    return name in ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER", "LARGER", "SMALLER",
                    "SENTBEFORE", "SENTON", "SENTSINCE")

