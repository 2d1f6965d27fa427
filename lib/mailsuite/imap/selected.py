"""The selected mailbox as one session sees it.

A session keeps its own view: the UIDs in message-number order, each
message's flags and its session-local \\Recent.  `refresh()` compares the
view with the file (a cheap stat when nothing changed, thanks to the index
cache; the store reads what changed under a lock, so another program's
rewrite is never seen half-done and no message is announced gone that is
still there) and returns the untagged responses that bring the client up
to date: EXPUNGE for messages another session removed, EXISTS/RECENT for
new deliveries, FETCH FLAGS for flag changes made elsewhere.  EXPUNGE is held
back while a command that uses message numbers runs (RFC 3501 7.4.1).
A mailbox file that did not exist when it was selected is picked up when
it appears.

Flag changes are changes, never a write-back of the session's view: a
STORE is applied under the lock to the flags the file holds at that moment
(`Mailbox.update_flags`), so a flag another session set meanwhile is kept
and shows in the STORE's answer; the \\Seen a FETCH sets and the end of
\\Recent are collected and written the same way at the end of the command,
so `STORE 1:1000` or a FETCH of 1000 bodies costs one in-place rewrite.

A keyword is announced with `* FLAGS` (and PERMANENTFLAGS) before any FETCH
shows it; an expunge another session made is announced at the first
command that allows it, and meanwhile the message keeps its number, its
UID and its flags in this session's view.
"""

import bisect
import gc
from contextlib import contextmanager
from typing import NamedTuple

LETTER_FLAGS = {"R": "\\Seen", "A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
FLAG_LETTERS = {v.lower(): k for k, v in LETTER_FLAGS.items()}
SYSTEM_FLAG_NAMES = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@contextmanager
def collector_paused():
    """No cyclic garbage collection while a mailbox index is built.

    An index is a great many small acyclic objects; left on, the collector
    walks all of them again and again as they are created and on every later
    allocation burst, which costs a 100,000-message SELECT a third of its
    time and frees nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # and later collections skip it (it is acyclic: reference counts free it)
        if enabled:
            gc.enable()


def scan_with_uids(box):
    """The current index, new messages given their UIDs (and the file its UID state) first, under the lock."""
    index = box.scan()
    if box.exists and index.messages and (not index.base_in_file or any(not m.uid for m in index.messages)):
        with box.locked():
            index = box.sync()
    return index


class UidValidityChanged(Exception):
    """The file was replaced or rewritten without its UIDs: the session must end."""


class FlagChange(NamedTuple):
    """One change to a message's flags, applied to whatever the file holds when it is written.

    `mode` is "+" (add), "-" (remove) or "" (replace, as STORE FLAGS; the
    store's own mark that a server has seen the message, O, is kept).
    """

    mode: str
    letters: frozenset
    keywords: tuple

    def apply(self, letters, keywords):
        if self.mode == "+":
            return frozenset(letters) | self.letters, tuple(keywords) + tuple(
                k for k in self.keywords if k not in keywords)
        if self.mode == "-":
            return frozenset(letters) - self.letters, tuple(k for k in keywords if k not in self.keywords)
        return (frozenset(letters) & {"O"}) | self.letters, self.keywords


SEEN = FlagChange("+", frozenset("R"), ())
NOT_NEW = FlagChange("+", frozenset("O"), ())  # a server has shown it: no longer \Recent for anyone else


def applied(changes, letters, keywords):
    """Flags after a list of changes, in order."""
    for change in changes:
        letters, keywords = change.apply(letters, keywords)
    return frozenset(letters), tuple(keywords)


def flag_names(letters, keywords, recent=False):
    names = [LETTER_FLAGS[c] for c in "RAFTD" if c in letters]
    names.extend(keywords)
    if recent:
        names.append("\\Recent")
    return tuple(names)


def split_flags(names):
    """IMAP flag names -> (letters, keywords)."""
    letters, keywords = set(), []
    for name in names:
        letter = FLAG_LETTERS.get(name.lower())
        if letter:
            letters.add(letter)
        elif not name.startswith("\\") and name not in keywords:
            keywords.append(name)
    return letters, keywords


class SelectedMailbox:
    def __init__(self, store, name, readonly):
        self.name = name
        self.readonly = readonly
        self.box = store.open(name)
        self.uids = []  # message number - 1 -> uid
        self.state = {}  # uid -> (letters frozenset, keywords tuple) as the client was told them
        self.messages = {}  # uid -> mbox.Message from the latest scan
        self.recent = set()
        self.expunged = set()  # gone from the file, not yet announced
        self.pending = {}  # uid -> [FlagChange] made by this session, not yet written
        self.keywords = ()  # the mailbox's keywords (X-IMAPbase)
        self.announced = ()  # the keywords the client was given in * FLAGS
        self.uidvalidity = 0
        self.news = []  # untagged responses found while loading, sent at the next refresh
        self.uidnext = 1
        self._seen_key = None
        self._loaded_since_refresh = False
        self._first_scan()

    # -- reading the file --

    def _file_key(self):
        try:
            return self.box.key() if self.box.exists else None
        except OSError:
            return None

    def _scan(self):
        """The file's index; what it was read at becomes the key `_unchanged` compares with.

        The key is taken before the scan (a change made during the scan is
        seen again at the next refresh) and kept only when the scan
        succeeds: a refresh that failed (a lock held too long) must not
        leave the view believing it is up to date.
        """
        key = self._file_key()
        with collector_paused():
            index = scan_with_uids(self.box)
        self._seen_key = key
        return index

    def _unchanged(self):
        """True when the file is exactly as we last read it (every rewrite moves mtime_ns)."""
        return self._seen_key is not None and self._file_key() == self._seen_key

    def _first_scan(self):
        messages = self._load(self._scan()).messages
        with collector_paused():
            self.uids = [m.uid for m in messages]
            self.state = {m.uid: (m.flags, m.keywords) for m in messages}
        for m in messages:
            if "O" not in m.flags:
                self._make_recent(m)
        self.write_back()
        self.announced = tuple(self.keywords)  # SELECT's * FLAGS

    def _load(self, index):
        with collector_paused():
            return self._load_index(index)

    def _load_index(self, index):
        if index.uidvalidity != self.uidvalidity:
            if self.uidvalidity:
                raise UidValidityChanged()
            self.uidvalidity = index.uidvalidity
        self.uidnext = index.uidnext
        self.keywords = index.keywords
        self.messages = {m.uid: m for m in index.messages if m.uid}  # UID-less ones come at the next refresh
        self.expunged.update(uid for uid in self.uids if uid not in self.messages)
        self._loaded_since_refresh = True  # refresh() must compare, even if the file is as last seen
        return index

    def _make_recent(self, m):
        self.recent.add(m.uid)
        if not self.readonly:
            self.change_flags(m.uid, NOT_NEW)

    # -- numbers --

    @property
    def exists(self):
        return len(self.uids)

    def seq_of_uid(self):
        return {uid: i for i, uid in enumerate(self.uids, 1)}

    def resolve(self, sequence, uid_mode):
        """[(seq, uid)] for a sequence set of message numbers or UIDs, in order."""
        if not self.uids:
            return []
        if uid_mode:  # UIDs ascend with message numbers: each range is a slice
            indexes = set()
            for lo, hi in sequence.resolve(self.uids[-1]):
                indexes.update(range(bisect.bisect_left(self.uids, lo), bisect.bisect_right(self.uids, hi)))
            return [(i + 1, self.uids[i]) for i in sorted(indexes)]
        numbers = set()
        for lo, hi in sequence.resolve(len(self.uids)):
            if lo < 1 or hi > len(self.uids):
                raise IndexError("no such message")
            numbers.update(range(lo, hi + 1))
        return [(n, self.uids[n - 1]) for n in sorted(numbers)]

    def flags_of(self, uid):
        """(letters, keywords) of a message in this session's view, its own unwritten changes included."""
        changes = self.pending.get(uid)
        return applied(changes, *self.state[uid]) if changes else self.state[uid]

    def imap_flags(self, uid):
        letters, keywords = self.flags_of(uid)
        return flag_names(letters, keywords, uid in self.recent)

    def change_flags(self, uid, change):
        """Note a change to write at the end of the command (see write_back)."""
        self.pending.setdefault(uid, []).append(change)

    def store(self, uids, change, silent=False):
        """Apply a STORE to the file now; {uid: (letters, keywords)} as written, for the messages still there.

        The answer is what the file holds afterwards, changes by others
        included, and becomes what the client knows; a silent STORE tells
        the client nothing, so others' changes are announced later.
        """
        updates = {uid: self.pending.pop(uid, []) + [change] for uid in uids if uid in self.messages}
        if not updates:
            return {}
        with self.box.locked():
            with collector_paused():
                index = self.box.update_flags({uid: _applier(changes) for uid, changes in updates.items()})
            self._seen_key = self._file_key()
        written = {m.uid: (m.flags, m.keywords) for m in index.messages if m.uid in updates}
        for uid, changes in updates.items():
            self.state[uid] = applied(changes, *self.state[uid]) if silent else written.get(uid, self.state[uid])
        self._load(index)
        return written

    def flags_news(self, keywords=()):
        """`* FLAGS` and PERMANENTFLAGS, when a keyword the client may see has not been announced yet."""
        wanted = tuple(self.keywords) + tuple(k for k in keywords if k not in self.keywords)
        if all(k in self.announced for k in wanted):
            return []
        self.announced = self.announced + tuple(k for k in wanted if k not in self.announced)
        flags = SYSTEM_FLAG_NAMES + self.announced
        news = [("FLAGS", "(" + " ".join(flags) + ")")]
        if not self.readonly:
            news.append(("OK", "[PERMANENTFLAGS (" + " ".join(flags + ("\\*",)) + ")]", "Flags permitted."))
        return news

    # -- keeping up with the file --

    def refresh_positions(self):
        """Re-read message offsets (caller holds a lock) without announcing anything or writing."""
        if not self._unchanged():
            key = self._file_key()
            index = self.box.scan()
            self._load(index)
            if all(m.uid for m in index.messages):  # else the next refresh must scan again, to give them UIDs
                self._seen_key = key

    def forget_positions(self):
        """The offsets proved wrong: the next refresh scans the whole file again."""
        self.box.forget()
        self._seen_key = None

    def reload(self, index):
        self._load(index)

    def write_back(self):
        """Write this session's pending flag changes, each applied to the file's flags, in one rewrite.

        The client was shown the flags with these changes made on its view;
        that view is what it knows now, and `refresh` tells it whatever
        else the file holds.
        """
        pending = {uid: changes for uid, changes in self.pending.items() if uid in self.messages}
        self.pending.clear()
        if not pending or self.readonly:
            return
        with self.box.locked():
            with collector_paused():
                index = self.box.update_flags({uid: _applier(changes) for uid, changes in pending.items()})
            self._seen_key = self._file_key()
        for uid, changes in pending.items():
            self.state[uid] = applied(changes, *self.state[uid])
        self._load(index)

    def refresh(self, allow_expunge=True):
        """Untagged responses (as tuples of parts) for changes made by others."""
        self.write_back()
        if not self._unchanged():
            self._load(self._scan())
        elif not self._loaded_since_refresh and not (allow_expunge and self.expunged):
            return []
        self._loaded_since_refresh = False
        out, self.news = self.news, []
        present = self.messages
        if allow_expunge and self.expunged:
            for seq in range(len(self.uids), 0, -1):  # highest first: lower numbers stay valid
                uid = self.uids[seq - 1]
                if uid in self.expunged:
                    out.append((str(seq), "EXPUNGE"))
                    self.state.pop(uid, None)
                    self.recent.discard(uid)
            self.uids = [uid for uid in self.uids if uid not in self.expunged]
            self.expunged.clear()
        seq_of = self.seq_of_uid()
        changed, shown = [], set()
        for uid, seq in seq_of.items():
            m = present.get(uid)
            if m is not None and (m.flags, m.keywords) != self.state[uid]:
                self.state[uid] = (m.flags, m.keywords)
                shown.update(m.keywords)
                changed.append((str(seq), "FETCH", ["FLAGS", self.imap_flags(uid)]))
        out += self.flags_news(shown)  # a keyword is announced before a FETCH shows it (RFC 3501 7.2.6)
        out += changed
        known = set(self.uids)
        last = self.uids[-1] if self.uids else 0
        new = [m for m in present.values() if m.uid not in known and m.uid > last]
        if new:
            for m in new:
                self.uids.append(m.uid)
                self.state[m.uid] = (m.flags, m.keywords)
                if "O" not in m.flags:
                    self._make_recent(m)
            out.append((str(len(self.uids)), "EXISTS"))
            out.append((str(len(self.recent)), "RECENT"))
            self.write_back()
        return out

    def expunge(self, only_uids=None):
        """Remove \\Deleted messages (limited to only_uids for UID EXPUNGE); the expunged UIDs.

        The flags in the file decide, not the session's view: another
        session may have set or cleared \\Deleted since our last look.
        """
        self.write_back()
        if not self.box.exists:
            return []
        known = set(self.uids)
        with self.box.locked():
            current = self.box.sync()
            doomed = [m.uid for m in current.messages
                      if "D" in m.flags and m.uid in known and (only_uids is None or m.uid in only_uids)]
            if doomed:
                current = self.box.sync(expunge=doomed)
            self._seen_key = self._file_key()
        self._load(current)
        return doomed

    def close(self):
        self.box.close()


def _applier(changes):
    """The function update_flags calls with a message's flags in the file."""
    return lambda letters, keywords: applied(changes, letters, keywords)
