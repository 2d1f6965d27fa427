"""The selected mailbox as one session sees it.

A session keeps its own view: the UIDs in message-number order, the flags
each message had when the client was last told, and its session-local
\\Recent.  The view is three typed arrays side by side (UIDs, flag bits,
keyword-set numbers), a few bytes a message, and the store's index is the
compact table the store mapped (store/table.py): a 100,000-message mailbox
costs a session about a megabyte, not a Python object per message.

`refresh()` compares the view with the file (a cheap stat when nothing
changed, thanks to the index cache; the store reads what changed under a
lock, so another program's rewrite is never seen half-done and no message
is announced gone that is still there) and returns the untagged responses
that bring the client up to date: EXPUNGE for messages another session
removed, EXISTS/RECENT for new deliveries, FETCH FLAGS for flag changes
made elsewhere.  The comparisons run over whole columns at C speed.
EXPUNGE is held back while a command that uses message numbers runs
(RFC 3501 7.4.1).  A mailbox file that did not exist when it was selected
is picked up when it appears.

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

import array
import bisect
from collections import namedtuple

from ..store.locking import LockTimeout
from ..store.table import LETTERS, WITH, WITHOUT, mask_of

LETTER_FLAGS = {"R": "\\Seen", "A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
FLAG_LETTERS = {v.lower(): k for k, v in LETTER_FLAGS.items()}
SYSTEM_FLAG_NAMES = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAG_MASK = 63
_UID_ATTEMPTS = 3  # times a session finds the lock taken and looks again before it waits for the lock
_KEYWORD_SETS_KEPT = 64  # keyword sets a session numbers before it forgets those no message has any more


def scan_with_uids(box):
    """The current index, new messages given their UIDs (and the file its UID state) first, under the lock.

    When many sessions see the same delivery, the first to get the lock
    gives the UIDs out: the others, finding the lock taken, wait for it to
    be let go and look again before they try to take it themselves.
    """
    index = box.scan()
    for attempt in range(_UID_ATTEMPTS):
        if not (box.exists and index.count and (not index.base_in_file or not index.all_have_uids)):
            return index
        try:
            with box.locked(timeout=None if attempt == _UID_ATTEMPTS - 1 else 0):
                return box.sync()
        except LockTimeout:
            with box.reading():
                index = box.scan()
    return index


class UidValidityChanged(Exception):
    """The file was replaced or rewritten without its UIDs: the session must end."""


class FlagChange(namedtuple("FlagChange", "mode letters keywords")):
    """One change to a message's flags, applied to whatever the file holds when it is written.

    `mode` is "+" (add), "-" (remove) or "" (replace, as STORE FLAGS; the
    store's own mark that a server has seen the message, O, is kept);
    `letters` is a frozenset of flag letters, `keywords` a tuple.
    """

    __slots__ = ()

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


class _Applier:
    """What update_flags calls with a message's flags in the file; one per distinct chain of changes."""

    __slots__ = ("changes",)

    def __init__(self, changes):
        self.changes = changes

    def __call__(self, letters, keywords):
        return applied(self.changes, letters, keywords)


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
        self.uids = array.array("q")  # message number - 1 -> uid (ascending)
        self.told = bytearray()  # message number - 1 -> flag bits as the client was told them
        self.told_kw = array.array("I")  # message number - 1 -> keyword set (self.keyword_sets) as told
        self.keyword_sets = [()]  # this session's numbering of keyword sets
        self._set_numbers = {(): 0}
        self._keyword_sets_limit = _KEYWORD_SETS_KEPT
        self.index = None  # the store's index as of the latest scan
        self.recent = set()
        self.expunged = set()  # gone from the file, not yet announced
        self.pending = {}  # uid -> (FlagChange, ...) made by this session, not yet written
        self._chains = {}  # each distinct chain of pending changes, kept once
        self.keywords = ()  # the mailbox's keywords (X-IMAPbase)
        self.announced = ()  # the keywords the client was given in * FLAGS
        self.uidvalidity = 0
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
        index = scan_with_uids(self.box)
        self._seen_key = key
        return index

    def _unchanged(self):
        """True when the file is exactly as we last read it (every rewrite moves mtime_ns)."""
        return self._seen_key is not None and self._file_key() == self._seen_key

    def _first_scan(self):
        index = self._load(self._scan())
        self._append_view(index, 0)
        flags = self.told
        for position in _positions_without(flags, "O"):
            self._make_recent(self.uids[position])
        self.write_back()
        self.announced = tuple(self.keywords)  # SELECT's * FLAGS

    def _load(self, index):
        if index.uidvalidity != self.uidvalidity:
            if self.uidvalidity:
                raise UidValidityChanged()
            self.uidvalidity = index.uidvalidity
        self.uidnext = index.uidnext
        self.keywords = index.keywords
        self.index = index  # UID-less messages come at the next refresh
        gone = self._gone_from(index)
        if gone:
            self.expunged.update(gone)
        self._loaded_since_refresh = True  # refresh() must compare, even if the file is as last seen
        return index

    def _trusted_uids(self, index):
        """The UIDs of the index's messages that have one, as a column (they ascend)."""
        return index.table.uid[index.first:index.valid]

    def _gone_from(self, index):
        """UIDs of the view no longer in the index; compared in C when the view is a prefix of the file."""
        known = len(self.uids)
        if not known:
            return ()
        uids = self._trusted_uids(index)
        if len(uids) >= known and _raw(uids[:known]) == _raw(self.uids):
            return ()
        return set(self.uids).difference(uids)

    def _keyword_set(self, keywords):
        n = self._set_numbers.get(keywords)
        if n is None:
            n = self._set_numbers[keywords] = len(self.keyword_sets)
            self.keyword_sets.append(keywords)
        return n

    def _translation(self, index):
        """The index's keyword-set numbers in this session's numbering."""
        self._forget_unused_keyword_sets()
        return [self._keyword_set(tuple(k)) for k in index.table.keyword_sets]

    def _forget_unused_keyword_sets(self):
        """Renumber the keyword sets when most are no message's any more: a session's memory stays flat.

        Every combination of keywords a message ever had gets a number;
        a long session that keeps changing keywords would otherwise keep
        them all.  The limit doubles with the sets still in use, so the
        renumbering costs a pass over the view now and then, not per command.
        """
        if len(self.keyword_sets) <= self._keyword_sets_limit:
            return
        renumbered = {0: 0}
        for old in self.told_kw:
            if old not in renumbered:
                renumbered[old] = len(renumbered)
        self.keyword_sets = [self.keyword_sets[old] for old in renumbered]
        self._set_numbers = {keywords: n for n, keywords in enumerate(self.keyword_sets)}
        self.told_kw = array.array("I", map(renumbered.__getitem__, self.told_kw))
        self._keyword_sets_limit = max(_KEYWORD_SETS_KEPT, 2 * len(self.keyword_sets))

    def _append_view(self, index, start):
        """Add the index's messages from row START on (rows with UIDs only) to the view."""
        table = index.table
        lo, hi = max(start, index.first), index.valid
        if lo >= hi:
            return
        self.uids.frombytes(_raw(table.uid[lo:hi]))
        self.told += bytes(table.flags[lo:hi])
        numbers = self._translation(index)
        kw = table.kw[lo:hi]
        if numbers == list(range(len(numbers))):
            self.told_kw.frombytes(_raw(kw))
        else:
            self.told_kw.extend(map(numbers.__getitem__, kw))

    def _make_recent(self, uid):
        self.recent.add(uid)
        if not self.readonly:
            self.change_flags(uid, NOT_NEW)

    # -- numbers --

    @property
    def exists(self):
        return len(self.uids)

    def position(self, uid):
        """The view's index of UID (message number - 1), or -1."""
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else -1

    def resolve(self, sequence, uid_mode):
        """[(seq, uid)] for a sequence set of message numbers or UIDs, in order."""
        if not self.uids:
            return []
        spans = []  # [lo, hi) positions in the view
        if uid_mode:  # UIDs ascend with message numbers: each range is a slice
            for lo, hi in sequence.resolve(self.uids[-1]):
                spans.append((bisect.bisect_left(self.uids, lo), bisect.bisect_right(self.uids, hi)))
        else:
            for lo, hi in sequence.resolve(len(self.uids)):
                if lo < 1 or hi > len(self.uids):
                    raise IndexError("no such message")
                spans.append((lo - 1, hi))
        out = []
        done = 0
        for lo, hi in sorted(spans):  # overlapping ranges name a message once
            lo = max(lo, done)
            if lo < hi:
                out += zip(range(lo + 1, hi + 1), self.uids[lo:hi])
                done = hi
        return out

    def message(self, uid):
        """The store's Message for UID as of the latest scan, or None if it is gone from the file."""
        return self.index.message_of_uid(uid) if self.index is not None else None

    def present(self, uid):
        return self.index is not None and self.index.row_of_uid(uid) >= 0

    def told_flags(self, uid):
        """(letters, keywords) the client was last told of UID, without this session's unwritten changes."""
        i = self.position(uid)
        return LETTERS[self.told[i] & _FLAG_MASK], self.keyword_sets[self.told_kw[i]]

    def _tell(self, uid, letters, keywords):
        i = self.position(uid)
        if i >= 0:
            self.told[i] = mask_of(letters)
            self.told_kw[i] = self._keyword_set(tuple(keywords))

    def flags_at(self, seq, uid):
        """flags_of(uid) for a message known to be number SEQ of the view: no lookup."""
        changes = self.pending.get(uid)
        i = seq - 1
        told = LETTERS[self.told[i] & _FLAG_MASK], self.keyword_sets[self.told_kw[i]]
        return applied(changes, *told) if changes else told

    def flags_of(self, uid):
        """(letters, keywords) of a message in this session's view, its own unwritten changes included."""
        changes = self.pending.get(uid)
        return applied(changes, *self.told_flags(uid)) if changes else self.told_flags(uid)

    def imap_flags(self, uid):
        letters, keywords = self.flags_of(uid)
        return flag_names(letters, keywords, uid in self.recent)

    def first_unseen(self):
        """The message number of the first message without \\Seen in this view, or 0."""
        for position in _positions_without(self.told, "R"):
            uid = self.uids[position]
            if "R" not in self.flags_of(uid)[0]:
                return position + 1
        return 0

    def change_flags(self, uid, change):
        """Note a change to write at the end of the command (see write_back)."""
        chain = self.pending.get(uid, ()) + (change,)
        self.pending[uid] = self._chains.setdefault(chain, chain)

    def _appliers(self, chains):
        """{uid: applier} for {uid: chain of changes}: one applier per distinct chain."""
        made = {}
        out = {}
        for uid, chain in chains.items():
            applier = made.get(chain)
            if applier is None:
                applier = made[chain] = _Applier(chain)
            out[uid] = applier
        return out

    def store(self, uids, change, silent=False):
        """Apply a STORE to the file now; {uid: (letters, keywords)} as written, for the messages still there.

        The answer is what the file holds afterwards, changes by others
        included, and becomes what the client knows; a silent STORE tells
        the client nothing, so others' changes are announced later.
        """
        updates = {uid: self.pending.pop(uid, ()) + (change,) for uid in uids if self.present(uid)}
        if not updates:
            return {}
        with self.box.locked():
            index = self.box.update_flags(self._appliers(updates))
            self._seen_key = self._file_key()
        table = index.table
        written = {}
        for uid in updates:
            row = index.row_of_uid(uid)
            if row >= 0:
                written[uid] = (table.letters(row), table.keywords(row))
        for uid, changes in updates.items():
            told = applied(changes, *self.told_flags(uid)) if silent else written.get(uid)
            if told is not None:
                self._tell(uid, *told)
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
            if index.all_have_uids:  # else the next refresh must scan again, to give them UIDs
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
        pending = {uid: changes for uid, changes in self.pending.items() if self.present(uid)}
        self.pending.clear()
        self._chains.clear()
        if not pending or self.readonly:
            return
        with self.box.locked():
            index = self.box.update_flags(self._appliers(pending))
            self._seen_key = self._file_key()
        for uid, changes in pending.items():
            self._tell(uid, *applied(changes, *self.told_flags(uid)))
        self._load(index)

    def refresh(self, allow_expunge=True):
        """Untagged responses (as tuples of parts) for changes made by others."""
        self.write_back()
        if not self._unchanged():
            self._load(self._scan())
        elif not self._loaded_since_refresh and not (allow_expunge and self.expunged):
            return []
        self._loaded_since_refresh = False
        out = []
        if allow_expunge and self.expunged:
            out += self._announce_expunges()
        changed, shown = self._flag_changes()
        out += self.flags_news(shown)  # a keyword is announced before a FETCH shows it (RFC 3501 7.2.6)
        out += changed
        index = self.index
        uids = self._trusted_uids(index)
        last = self.uids[-1] if self.uids else 0
        start = bisect.bisect_right(uids, last)
        if start < len(uids):
            known = len(self.uids)
            self._append_view(index, index.first + start)
            for position in _positions_without(self.told, "O", known):
                self._make_recent(self.uids[position])
            out.append((str(len(self.uids)), "EXISTS"))
            out.append((str(len(self.recent)), "RECENT"))
            self.write_back()
        return out

    def _announce_expunges(self):
        """EXPUNGE responses for the messages gone, highest number first; the view loses them."""
        out = []
        keep = []
        for position in range(len(self.uids) - 1, -1, -1):  # highest first: lower numbers stay valid
            uid = self.uids[position]
            if uid in self.expunged:
                out.append((str(position + 1), "EXPUNGE"))
                self.recent.discard(uid)
                self.pending.pop(uid, None)
            else:
                keep.append(position)
        keep.reverse()
        self.uids = array.array("q", (self.uids[p] for p in keep))
        self.told = bytearray(self.told[p] for p in keep)
        self.told_kw = array.array("I", (self.told_kw[p] for p in keep))
        self.expunged.clear()
        return out

    def _flag_changes(self):
        """FETCH FLAGS for the messages whose flags in the file differ from what the client was told."""
        index = self.index
        table = index.table
        uids = self._trusted_uids(index)
        known = len(self.uids)
        rows = _rows_of(self.uids, uids, index.first)
        numbers = self._translation(index)
        changed, shown = [], set()
        if rows is None:                # the view is a prefix of the file: compare whole columns first
            flags = bytes(table.flags[index.first:index.first + known])
            kw = table.kw[index.first:index.first + known]
            same_kw = numbers == list(range(len(numbers))) and _raw(kw) == _raw(self.told_kw)
            if flags == bytes(self.told) and same_kw:
                return changed, shown
            candidates = ((p, index.first + p) for p in range(known))
        else:
            candidates = ((p, row) for p, row in enumerate(rows) if row >= 0)
        told, told_kw = self.told, self.told_kw
        for position, row in candidates:
            mask, kw = table.flags[row] & _FLAG_MASK, numbers[table.kw[row]]
            if mask != told[position] or kw != told_kw[position]:
                told[position], told_kw[position] = mask, kw
                uid = self.uids[position]
                keywords = self.keyword_sets[kw]
                shown.update(keywords)
                changed.append((position, uid))
        return [(str(position + 1), "FETCH", ["FLAGS", self.imap_flags(uid)]) for position, uid in changed], shown

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
            table = current.table
            deleted = _positions_without(bytes(table.flags[current.first:current.valid]), "D", inverse=True)
            doomed = [uid for uid in (table.uid[current.first + p] for p in deleted)
                      if uid in known and (only_uids is None or uid in only_uids)]
            if doomed:
                current = self.box.sync(expunge=doomed)
            self._seen_key = self._file_key()
        self._load(current)
        return doomed

    def close(self):
        self.box.close()


def _raw(column):
    """A column's bytes, for comparing two columns in C."""
    return memoryview(column).cast("B")


def _positions_without(flags, letter, start=0, inverse=False):
    """Positions (from START) of the flag bytes lacking LETTER (having it, with INVERSE), found in C."""
    marks = bytes(flags[start:]).translate((WITH if inverse else WITHOUT)[letter])
    at = marks.find(1)
    while at >= 0:
        yield start + at
        at = marks.find(1, at + 1)


def _rows_of(view_uids, index_uids, first):
    """None when the view's UIDs are the index's first ones (the common case), else each one's row or -1."""
    known = len(view_uids)
    if len(index_uids) >= known and _raw(index_uids[:known]) == _raw(view_uids):
        return None
    rows = []
    for uid in view_uids:
        i = bisect.bisect_left(index_uids, uid)
        rows.append(first + i if i < len(index_uids) and index_uids[i] == uid else -1)
    return rows
