"""The mbox store: one mailbox file, opened safely, locked, appended to and rewritten in place.

Every reader and writer in mailsuite goes through `Mailbox`:

* opening refuses symlinks, hard links, non-regular and foreign-owned files;
* `locked()` takes fcntl + dotlock (locking.py) and first finishes whatever
  a killed process left half-done (journal.py); `reading()` takes a shared
  fcntl lock, which is all reading needs (and all a full disk allows);
* `scan()` indexes the file (scan.py), reusing the index cache
  (index.py, keyed on device, inode, size, mtime and ctime) and reading
  only an appended tail when the file merely grew; whatever it has to read,
  it reads under a lock, so it never sees another program's rewrite
  half-done;
* `current()` finds a message again for a reader that let go of the lock
  since its scan, checking its offset, From_ line, X-UID and extent;
* `append()` is the one way anything is added to an mbox file: crash
  record, the file extended to its final size, the message, fsync;
  `append_deliveries()` does the same for several messages at once
  (one record, one fsync: the MTA's group commit);
* `sync()` assigns UIDs to new messages (they only ever ascend), applies
  flag changes and expunges: in place where the new store headers fit the
  padding reserved for them (after checking that the bytes at the planned
  offsets are what was indexed), else by writing the new tail of the file
  to a journal and copying it over, never by renaming a new file over the
  spool.  A mailbox emptied this way keeps its UID state in a
  pseudo-message, as Dovecot and UW IMAP do.

UIDVALIDITY and UIDLAST live in the first message's X-IMAPbase (or the
pseudo-message's X-IMAP).  The index cache remembers them too, so they
survive a mail reader deleting the first message or emptying the file:
when the file holds no UID state but its X-UIDs fit the remembered one,
the remembered one is used, and written back at the next sync.  New
UIDVALIDITY values come from a per-user counter that never repeats.

The format rules (From_ lines, quoting, the store's headers) are in
format.py; this module re-exports the names servers use.
"""

import errno
import os
import re
import stat
import time
import zlib
from contextlib import contextmanager

from ..core import fileio
from .format import (
    HIDDEN_HEADERS,
    STORE_HEADERS,
    STRIP_ON_DELIVERY,
    SYSTEM_FLAGS,
    MailboxError,
    from_line,
    header_lines_without,
    quote_from_lines,
    render_block,
    served_body,
    served_header,
    valid_keyword,
)
from .index import IndexCache, Snapshot
from .journal import AppendRecord, Journal, RecoveryPending
from .locking import mailbox_lock, read_lock
from .scan import FIRST_STORE_HEADERS, not_mbox_reason, scan_range, uids_fit
from .table import Index, Message, Table, TableBuilder, valid_rows

__all__ = ["Mailbox", "MailboxError", "RecoveryPending", "StaleOffsets", "Index", "Message", "SYSTEM_FLAGS", "STORE_HEADERS",
           "HIDDEN_HEADERS", "STRIP_ON_DELIVERY", "from_line", "header_lines_without", "quote_from_lines",
           "served_header", "served_body", "valid_keyword", "scan_range", "PSEUDO_SUBJECT"]

PSEUDO_SUBJECT = "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"
_PSEUDO_BODY = (b"This message holds the mail system's record of this folder (its UIDVALIDITY\n"
                b"and the last UID given out), so that mail clients never see a message number\n"
                b"used twice.  Mail programs hide it; please leave it where it is.\n")
_BLOCK = re.compile(rb"(?:(?:status|x-status|x-keywords|x-uid|x-imapbase|x-imap)[ \t]*:[^\n]*\n"
                    rb"(?:[ \t][^\n]*\n)*)+", re.I)
_X_UID = re.compile(rb"^x-uid[ \t]*:[ \t]*(\d+)[ \t\r]*$", re.I | re.M)
_NO_KEY = (-1, -1, -1, -1, -1)       # the cache key of a mailbox file that does not exist
_CHECK_WINDOW = 1 << 20              # bytes read at a time to check messages before writing in place
_RELEASE_AFTER = 1000                # messages parsed at once after which freed memory goes back to the system


class _StaleIndex(Exception):
    """The bytes at an indexed offset are not what the index says: scan again."""


class StaleOffsets(MailboxError):
    """A message to be read is not where the index says (the file changed unseen): forget it and scan again."""


class Mailbox:
    """One mbox file.  Hold `locked()` for anything that writes."""

    def __init__(self, path, cfg, *, owner=None, fd=None, check_owner=True):
        self.path = path
        self.cfg = cfg
        self.owner = owner
        self.fd = fd
        self._lock = None
        self._lock_depth = 0
        self._read_depth = 0
        self._check_owner = check_owner
        self._closed = False
        self.readonly = False
        self._memo = None
        self.journal = Journal(path, owner)
        self.cache = self._open_cache()
        if self.fd is None:
            self._open()

    def _open(self):
        """Open for reading and writing; a file we may only read opens read-only (`mail -u`)."""
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                self.fd = os.open(self.path, os.O_RDWR | flags)
            except PermissionError:
                self.fd = os.open(self.path, os.O_RDONLY | flags)
                self.readonly = True
        except FileNotFoundError:
            self.fd = None
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MailboxError(f"{self.path}: is a symbolic link; refusing it") from None
            if exc.errno == errno.EISDIR:
                raise MailboxError(f"{self.path}: is a directory; refusing it") from None
            raise
        try:
            self.verify()
        except MailboxError:
            os.close(self.fd)
            self.fd = None
            raise

    def verify(self):
        """Refuse anything that is not a plain, singly-linked file of the owner's."""
        st = os.fstat(self.fd)
        try:
            lst = os.lstat(self.path)
        except FileNotFoundError:
            raise MailboxError(f"{self.path}: vanished while opening") from None
        if stat.S_ISLNK(lst.st_mode) or (lst.st_dev, lst.st_ino) != (st.st_dev, st.st_ino):
            raise MailboxError(f"{self.path}: was replaced while opening; refusing it")
        if not stat.S_ISREG(st.st_mode):
            raise MailboxError(f"{self.path}: not a regular file; refusing it")
        if st.st_nlink != 1:
            raise MailboxError(f"{self.path}: has {st.st_nlink} links; refusing it")
        if self._check_owner and self.owner is not None and st.st_uid != self.owner.uid:
            raise MailboxError(f"{self.path}: owned by uid {st.st_uid}, not {self.owner.name}; refusing it")

    def create(self, mode=0o600, uid=None, gid=None):
        """Create the file if missing (O_EXCL, never through a symlink)."""
        if self.fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            self._open()
            return
        if uid is not None and os.geteuid() == 0:
            os.fchown(fd, uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        self.fd = fd

    @property
    def exists(self):
        """Whether the file is there (looked for again if it was not: it may have been delivered to since)."""
        if self.fd is None and not self._lock_depth and not self._closed:
            self._open()
        return self.fd is not None

    def close(self):
        if not self._lock_depth and not self._read_depth:
            self._closed = True
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- locks -----------------------------------------------------------------

    @contextmanager
    def locked(self, timeout=None):
        """Both locks, re-entrant within the process; an interrupted rewrite is finished first."""
        if self.readonly:
            raise MailboxError(f"{self.path}: read-only for this user")
        if self.fd is None or self._lock_depth:
            self._lock_depth += 1
            try:
                yield self._lock
            finally:
                self._lock_depth -= 1
            return
        if self._read_depth:
            raise RuntimeError("a read lock cannot become a write lock")
        with mailbox_lock(self.path, self.fd, self.cfg, timeout=timeout) as lock:
            self._lock = lock
            self._lock_depth = 1
            try:
                self.verify()
                self.journal.roll_forward(self.fd)
                yield lock
            finally:
                self._lock_depth = 0
                self._lock = None

    @contextmanager
    def reading(self, timeout=None):
        """A consistent file to read: a shared fcntl lock (no dotlock: no disk space needed).

        Whatever a killed writer left is finished first, under the write
        lock; a reader who may not write cannot, and is told to come back.
        """
        if self.fd is None or self._lock_depth or self._read_depth:
            self._read_depth += 1
            try:
                yield
            finally:
                self._read_depth -= 1
            return
        if self.journal.pending(self.fd):
            if self.readonly:
                raise RecoveryPending(f"{self.path}: an interrupted change waits for the mailbox's owner")
            with self.locked(timeout):
                yield
            return
        with read_lock(self.path, self.fd, self.cfg, timeout=timeout):
            self._read_depth = 1
            try:
                self.verify()
                yield
            finally:
                self._read_depth = 0

    def touch_lock(self):
        if self._lock is not None:
            self._lock.touch()

    def _require_lock(self):
        if not self._lock_depth:
            raise RuntimeError("mailbox must be locked for writing")
        if self.fd is None:
            raise MailboxError(f"{self.path}: does not exist")

    # --- the index ---------------------------------------------------------------

    def _open_cache(self):
        """The owner's index cache, used only by the owner's own processes.

        It lives under the owner's home, in directories they control: root
        (`mail -u USER`, delivery) must never write through their links."""
        template = self.cfg.mailsuite.index_dir
        if not template or self.owner is None or self.owner.uid != os.geteuid():
            return None
        return IndexCache(self.cfg.expand_user_path(template, self.owner.home))

    def key(self):
        """What identifies the file's present state: device, inode, size, mtime and ctime (which nobody can set back)."""
        if self.fd is None:
            return _NO_KEY
        return _key(os.fstat(self.fd))

    def scan(self):
        """The index of the whole file; only what changed is read, and that under a lock.

        The cache holds scans as parsed (with how many leading X-UIDs hold),
        and a scan is stored only if the file did not change while it ran;
        the cache itself keeps the newest state when two processes store at
        once.
        """
        if not self.exists:
            return self._index_of(self._remembered(_NO_KEY), 0, fresh=_NO_KEY)
        st = os.fstat(self.fd)
        key = _key(st)
        before = self._remembered(key)
        if before is not None and before.key == key:
            return self._index_of(before, st.st_size)
        with self.reading():
            return self._scan_locked()

    def _remembered(self, key):
        """The Snapshot of the last scan known: this object's if it is of KEY, else the index cache's."""
        memo = self._memo
        if memo is not None and memo.key == key:
            return memo
        cached = self.cache.load(self.path) if self.cache else None
        if cached is not None:
            self._memo = cached
        return cached or memo

    def _scan_locked(self, *, trust_cache=True):
        """Scan what changed since the newest scan remembered; caller holds a lock.

        What is remembered is looked up under the lock: a state looked up
        before it may predate another process's in-place change, which a
        scan of the grown tail alone would never see.  Without TRUST_CACHE
        (the layout proved stale) the whole file is read, and only the UID
        state of what was remembered is used.
        """
        st = os.fstat(self.fd)
        key = _key(st)
        before = self._remembered(key) if trust_cache else self._memo
        found = None
        known = 0
        if trust_cache and before is not None:
            if before.key == key:
                return self._index_of(before, st.st_size)
            old_key = before.key
            if (old_key[:2] == key[:2] and st.st_size > old_key[2] and len(before.table)
                    and self._tail_signature(old_key[2]) == before.tail):
                found = self._scan_grown(before.table, st.st_size)
                if (found is not None and before.imapbase and found[1] and found[1][0] == before.imapbase[0]
                        and found[1][1] >= before.imapbase[1]):
                    known = min(before.valid, len(before.table) - 1)
        if found is None:
            found = scan_range(self.fd, 0, st.st_size)
            _give_back_after(len(found[0]))
        table, imapbase = found
        in_file = imapbase is not None
        if not in_file and before is not None:
            remembered = before.imapbase
            if remembered is not None and uids_fit(table, remembered[1]):
                imapbase = remembered       # a mail reader took the first message, and X-IMAPbase with it
        if imapbase is None and not len(table):
            imapbase = (self.new_uidvalidity(), 0, ())
        snapshot = Snapshot(key, self._tail_signature(key[2]), table, imapbase, in_file,
                            valid_rows(table, imapbase, known))
        if _key(os.fstat(self.fd)) == key:
            # messages without UIDs are given them by the sync that follows: that state is the one to keep
            self._remember(snapshot, share=snapshot.valid == len(table))
        return self._index_of(snapshot, st.st_size)

    def _index_of(self, snapshot, size, fresh=None):
        """The Index of a remembered scan; with FRESH (no file) only its UID state, one made up if none."""
        if fresh is not None:
            imapbase = snapshot.imapbase if snapshot is not None else None
            if snapshot is None or imapbase is None or snapshot.key != fresh:
                snapshot = Snapshot(fresh, b"", Table.empty(), imapbase or (self.new_uidvalidity(), 0, ()), False, 0)
                self._remember(snapshot)
        uidvalidity, uidlast, keywords = snapshot.imapbase or (0, 0, ())
        return Index(snapshot.table, uidvalidity, uidlast, keywords, size, base_in_file=snapshot.in_file,
                     valid=snapshot.valid)

    def _remember(self, snapshot, share=True):
        """Keep a scan for this object's next scan, and (with SHARE) in the index cache for other processes."""
        self._memo = snapshot
        if self.cache and share:
            self.cache.store(self.path, snapshot)

    def forget(self):
        """Drop what is remembered of the file's layout, here and in the index cache (the UID state is kept)."""
        if self._memo is not None:
            self._remember(Snapshot(_NO_KEY, b"", Table.empty(), self._memo.imapbase, False, 0))

    def new_uidvalidity(self):
        """A UIDVALIDITY this user has never been given before (RFC 3501 2.3.1.1)."""
        floor = int(time.time())
        value = self.cache.next_uidvalidity(floor) if self.cache else None
        return value or floor

    def _scan_grown(self, old, size):
        """The file only grew: parse the new tail, and the first message again.

        The first message is re-read because its X-IMAPbase may have been
        raised in place (an IMAP APPEND does so before it appends).  If the
        old last message is not where it was, the file was rewritten as
        well as grown: None, and the caller scans it all.
        """
        last = len(old) - 1
        try:
            tail, imapbase = scan_range(self.fd, old.start[last], size)
        except MailboxError:
            return None
        if not len(tail) or tail.from_bytes(0) != old.from_bytes(last):
            return None
        if last == 0:
            return tail, imapbase
        head, imapbase = scan_range(self.fd, 0, old.start[1])
        if len(head) != 1 or head.uid[0] != old.uid[0]:
            return None
        builder = TableBuilder()
        builder.extend(head)
        builder.extend(old, 1, last)
        builder.extend(tail)
        return builder.table(), imapbase

    def _tail_signature(self, size):
        return os.pread(self.fd, 64, max(size - 64, 0)) if self.fd is not None and size > 0 else b""

    # --- reading -----------------------------------------------------------------

    def read(self, msg, start=None, end=None):
        """Bytes of a stored message (from its first header to its end), or a slice of them."""
        lo = msg.header if start is None else start
        hi = msg.end if end is None else end
        return fileio.pread_all(self.fd, hi - lo, lo)

    def open_range(self, msg, start=None, end=None):
        """A buffered binary file over a message (or a slice), for streaming big ones."""
        lo = msg.header if start is None else start
        hi = msg.end if end is None else end
        return fileio.reader(self.fd, lo, hi)

    def still_there(self, msg):
        """Whether MSG is still at its offset: its From_ line, its X-UID and its extent are as indexed."""
        if self.fd is None:
            return False
        return _placed(msg, os.fstat(self.fd).st_size, lambda lo, hi: fileio.pread_all(self.fd, hi - lo, lo))

    def current(self, msg):
        """MSG as it is in the file now (found again by its UID after a rewrite), or None if it is gone.

        For readers that let go of the lock since their scan (POP3, `mail`,
        IMAP between commands); call it under `reading()` and read the
        message before letting go.
        """
        if self.still_there(msg):
            return msg
        if not msg.uid:
            return None
        found = self.scan().message_of_uid(msg.uid)
        if found is not None and not self.still_there(found):    # an index the file's key could not tell stale
            self.forget()
            found = self.scan().message_of_uid(msg.uid)
        if found is None or found.from_line != msg.from_line or found.end - found.body != msg.end - msg.body:
            return None
        return found

    def copies(self, messages):
        """The bytes of MESSAGES copied out (call under a lock), to be sent after letting go of it.

        Each is checked to be where the index says (as `still_there`), from
        the bytes read anyway; StaleOffsets if one is not.
        """
        return MessageCopies(self.fd, messages)

    # --- appending ---------------------------------------------------------------

    def append(self, source, *, sender, date=None, flags=frozenset(), keywords=(), extra_headers=(),
               assign_uid=False):
        """Append one message; returns its UID (0 unless assign_uid).  Caller holds locked().

        SOURCE is a PreparedMessage (deliver.prepare: quoted for delivery,
        or exact) or the raw bytes of a message to store exactly (IMAP
        APPEND and COPY, `mail`'s saves).  With assign_uid every earlier
        message gets its UID first, so UIDs keep ascending, and UIDLAST is
        raised before the message is written: a failed append leaves a
        harmless gap, never a UID given twice.
        """
        self._require_lock()
        index = self.sync() if assign_uid else None
        uid = index.uidnext if index else 0
        keywords = tuple(k for k in keywords if valid_keyword(k))
        if uid and index.all:
            base_keywords = index.keywords + tuple(k for k in keywords if k not in index.keywords)
            self._rewrite(index, {}, set(), (index.uidvalidity, uid, base_keywords))
        old_size = self._appendable_size()
        prepared = _prepared(source)
        try:
            first_of_file = index is not None and not index.all
            imapbase = (index.uidvalidity or self.new_uidvalidity(), uid, keywords) if first_of_file else None
            head = self._head(_separator_needed(self.fd, old_size), sender, date, extra_headers, prepared,
                              flags=flags, keywords=keywords, uid=uid, imapbase=imapbase)
            self._write_appended(old_size, [(head, prepared, _trailer(prepared))])
        finally:
            if prepared is not source:
                prepared.close()
        return uid

    def append_deliveries(self, deliveries, *, announce=None):
        """Append several delivered messages at once (group commit); their offsets.  Caller holds locked().

        DELIVERIES is a list of (PreparedMessage, sender, extra_headers).
        They are written as one append: one crash record for all of them,
        the file extended once, one fsync; whole, or (on an error, or after
        a crash) not at all.  ANNOUNCE(offsets), when given, is told where
        each message will begin before anything is written (the MTA
        records it, so that a retry after a crash finds what was delivered).
        """
        self._require_lock()
        old_size = self._appendable_size()
        separator = _separator_needed(self.fd, old_size)
        pieces, offsets, at = [], [], old_size
        for prepared, sender, extra_headers in deliveries:
            head = self._head(separator, sender, None, extra_headers, prepared)
            pieces.append((head, prepared, _trailer(prepared)))
            offsets.append(at)
            at += len(head) + prepared.body_size + len(pieces[-1][2])
            separator = b""             # each trailer leaves the blank line before the next From_ line
        if announce is not None:
            announce(offsets)
        self._write_appended(old_size, pieces)
        return offsets

    def _appendable_size(self):
        """The file's size, where an append goes; MailboxError if the file is no mbox (nothing is added then)."""
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 5, 0) != b"From ":
            raise MailboxError(f"{self.path}: {not_mbox_reason(self.fd, size)}; nothing is added to it")
        return size

    def _head(self, separator, sender, date, extra_headers, prepared, *, flags=frozenset(), keywords=(), uid=0,
              imapbase=None):
        """What precedes a message's body in the file: separator, From_ line, our lines, its header, the store's."""
        block = render_block(flags=flags, keywords=keywords, uid=uid, imapbase=imapbase,
                             padding=self.cfg.delivery.header_padding)
        length = b""
        if prepared.exact:
            length = b"Content-Length: %d\n" % (prepared.body_size + (not prepared.body_ends_line))
        return b"".join([separator, b"From ", from_line(sender, date).encode(), b"\n", *extra_headers,
                         prepared.header_bytes, block, length, b"\n"])

    def start_uid_state(self):
        """Give an empty file its own UIDVALIDITY now, in a pseudo-message (a folder made by IMAP CREATE).

        A new folder then has a UIDVALIDITY no earlier folder of that name
        had (RFC 3501 2.3.1.1), which Dovecot reads too.  Caller holds locked().
        """
        self._require_lock()
        if os.fstat(self.fd).st_size:
            return
        imapbase = (self.new_uidvalidity(), 0, ())
        self._write_appended(0, [(_pseudo_message(imapbase, self.cfg.delivery.header_padding), _NoBody, b"\n")])
        self._memo = None

    def _write_appended(self, old_size, pieces):
        """The append itself: record, the file extended to its final size, the bytes, fsync; undone on error.

        PIECES are (head, prepared, trailer) of each message.  The crash
        record sees them as one message: the first head, then everything
        up to the last trailer as its body (checksummed in the order
        written), so a crash keeps all of them or none.
        """
        first_head, last_trailer = pieces[0][0], pieces[-1][2]
        total = sum(len(head) + prepared.body_size + len(trailer) for head, prepared, trailer in pieces)
        crc = pieces[0][1].body_crc
        for (_, _, previous_trailer), (head, prepared, _) in zip(pieces, pieces[1:]):
            crc = zlib.crc32(head, zlib.crc32(previous_trailer, crc))
            for chunk in prepared.body_chunks():
                crc = zlib.crc32(chunk, crc)
        after = old_size + total
        record = self.journal.record_append(self.fd, AppendRecord(old_size, after, first_head,
                                                                  total - len(first_head) - len(last_trailer),
                                                                  crc, last_trailer))
        try:
            fileio.truncate(self.fd, after)
            writer = fileio.Writer(self.fd, old_size)
            for head, prepared, trailer in pieces:
                body = prepared.body_bytes()
                if body is not None:            # small: one write
                    writer.write(b"".join((head, body, trailer)))
                    continue
                writer.write(head)
                for chunk in prepared.body_chunks():
                    writer.write(chunk)
                writer.write(trailer)
            os.fsync(self.fd)
        except BaseException:
            _truncate_back(self.fd, old_size)
            raise
        finally:
            self.journal.appended(record)

    # --- rewriting ---------------------------------------------------------------

    def sync(self, flags=None, expunge=(), keywords=None):
        """Assign missing UIDs, apply flag changes, drop expunged messages; returns the new index.

        `flags` maps uid -> (flags, keywords); `expunge` holds uids; `keywords`
        adds names to the mailbox's keyword list.  Caller holds locked().
        Messages appended by others since the caller's last scan are kept as
        they are, and get their UIDs here.  If the bytes at an offset to be
        written are not what the index says (a program rewrote the file
        without changing anything the index key sees), the file is scanned
        afresh and the changes planned again.
        """
        self._require_lock()
        index = self.scan()
        try:
            return self._sync(index, flags or {}, set(expunge), keywords)
        except _StaleIndex:
            self.forget()
            return self._sync(self._scan_locked(trust_cache=False), flags or {}, set(expunge), keywords)

    def _sync(self, index, flags, expunge, keywords):
        table = index.table
        if not len(table):
            return index
        next_uid = index.uidnext
        base_keywords = list(index.keywords)
        changes = {}                # row -> (letters, keywords, uid)
        for uid, (new_flags, new_keywords) in flags.items():
            i = index.row_of_uid(uid)
            if i < 0:
                continue
            new_flags = frozenset(c for c in new_flags if c in SYSTEM_FLAGS)
            new_keywords = tuple(k for k in new_keywords if valid_keyword(k))
            if (new_flags, new_keywords) != (table.letters(i), table.keywords(i)):
                changes[i] = (new_flags, new_keywords, uid)
        for i in range(max(index.valid, index.first), len(table)):     # new messages get their UIDs
            changes[i] = (table.letters(i), table.keywords(i), next_uid)
            next_uid += 1
        for keyword_set in _keyword_sets_in_use(table, changes):
            base_keywords += [k for k in keyword_set if k not in base_keywords]
        base_keywords += [k for k in keywords or () if valid_keyword(k) and k not in base_keywords]
        imapbase = (index.uidvalidity or self.new_uidvalidity(), max(next_uid - 1, index.uidlast),
                    tuple(base_keywords))
        drop = {i for i in map(index.row_of_uid, expunge) if i >= 0}
        if (not changes and not drop and index.base_in_file
                and (index.uidvalidity, index.uidlast, index.keywords) == imapbase):
            return index
        return self._rewrite(index, changes, drop, imapbase)

    def update_flags(self, updates):
        """Change flags by UID, each from the flags in the file now; returns the new index.

        `updates` maps uid -> function(flags, keywords) -> (flags, keywords),
        called with what the file holds under the lock, so a change another
        process made since the caller last looked is kept: IMAP's
        +FLAGS/-FLAGS are deltas, never a write-back of a stale full set.
        UIDs no longer in the file are left out.  Caller holds locked().
        """
        self._require_lock()
        current = self.scan()
        table = current.table
        wanted = {}
        for uid, change in updates.items():
            i = current.row_of_uid(uid)
            if i >= 0:
                wanted[uid] = change(table.letters(i), table.keywords(i))
        return self.sync(flags=wanted)

    def _rewrite(self, index, changes, drop, imapbase):
        """Apply store-header changes: in place where they fit, else journal the rest of the file.

        `changes` maps a row to (letters, keywords, uid); `drop` holds rows
        to expunge; the first surviving message carries imapbase (a
        pseudo-message is written to carry it when none survives).
        """
        table = index.table
        count = len(table)
        first = next((i for i in range(count) if i not in drop), None)
        wanted = {i: (*change, None) for i, change in changes.items() if i not in drop}
        if first is not None:
            letters, keywords, uid, _ = wanted.get(first) or (table.letters(first), table.keywords(first),
                                                              index.uid_at(first), None)
            wanted[first] = (letters, keywords, uid, imapbase)
        tail_from = min(drop, default=None)          # a row: from there on the file is written anew
        in_place = []
        for i in sorted(wanted):
            if tail_from is not None and i >= tail_from:
                break
            letters, keywords, uid, base = wanted[i]
            block = table.block(i)
            size = block[1] - block[0] if block else 0
            rendered = render_block(flags=letters, keywords=keywords, uid=uid, imapbase=base,
                                    pseudo=table.is_pseudo(i), pad_to=size) if block else b""
            if len(rendered) != size or not size:
                tail_from = i
                break
            in_place.append((i, block[0], rendered))
        self._check_in_place(table, [i for i, _, _ in in_place])
        for _i, at, rendered in in_place:
            fileio.pwrite_all(self.fd, rendered, at)
        kept = table.changed({i: wanted[i][:3] for i, _, _ in in_place}) if in_place else table
        if tail_from is not None:
            self._rewrite_tail(table, tail_from, drop, first, wanted, imapbase)
        _mark_modified(self.fd)
        os.fsync(self.fd)
        st = os.fstat(self.fd)
        if tail_from is not None:
            builder = TableBuilder()
            builder.extend(kept, 0, tail_from)
            builder.extend(scan_range(self.fd, table.start[tail_from], st.st_size)[0])
            kept = builder.table()
        known = tail_from if tail_from is not None else len(kept)
        snapshot = Snapshot(_key(st), self._tail_signature(st.st_size), kept, imapbase, True,
                            valid_rows(kept, imapbase, known))
        self._remember(snapshot)
        _give_back_after(len(in_place) + (count - tail_from if tail_from is not None else 0))
        return self._index_of(snapshot, st.st_size)

    def _check_in_place(self, table, rows):
        """Raise _StaleIndex unless each row's From_ line and store-header block are where the index says.

        The bytes are read a window at a time, so checking every message of
        a big mailbox costs a few large reads, not two small ones each.
        """
        window = b""
        window_at = 0
        for i in rows:
            start = table.start[i]
            lead = 1 if start else 0
            lo, hi = table.block_lo[i], table.block_hi[i]
            if not (window_at <= start - lead and hi <= window_at + len(window)):
                window_at = start - lead
                window = os.pread(self.fd, max(_CHECK_WINDOW, hi - window_at), window_at)
            expected = (b"\n" if lead else b"") + b"From " + table.from_bytes(i)
            at = start - lead - window_at
            if window[at:at + len(expected)] != expected:
                raise _StaleIndex()
            block_at = lo - 1 - window_at
            if window[block_at:block_at + 1] != b"\n" or not _BLOCK.fullmatch(window, block_at + 1, hi - window_at):
                raise _StaleIndex()

    def _rewrite_tail(self, table, tail_from, drop, first, wanted, imapbase):
        """Write the new tail of the file to a journal, then copy it over the file from row tail_from on."""
        path, jfd = self.journal.begin_tail(self.fd)
        try:
            writer = fileio.Writer(jfd, 0)
            separator = b""
            if first is None:              # emptied: the UID state stays in a pseudo-message
                writer.write(_pseudo_message(imapbase, self.cfg.delivery.header_padding))
                separator = b"\n"
            for i in range(tail_from, len(table)):
                if i in drop:
                    continue
                start, header, body, end = table.start[i], table.header[i], table.body[i], table.end[i]
                plan = wanted.get(i)
                writer.write(separator)
                lead = fileio.pread_all(self.fd, header - start, start)
                if not lead.startswith(b"From " + table.from_bytes(i)):
                    raise _StaleIndex()
                writer.write(lead)
                if plan is None:
                    fileio.copy_into(self.fd, header, end - header, writer)
                else:
                    letters, keywords, uid, base = plan
                    head = fileio.pread_all(self.fd, body - header, header)
                    names = FIRST_STORE_HEADERS if i == first else STORE_HEADERS
                    writer.write(b"".join(line + b"\n" for line in header_lines_without(head, names)))
                    writer.write(render_block(flags=letters, keywords=keywords, uid=uid, imapbase=base,
                                              pseudo=table.is_pseudo(i), padding=self.cfg.delivery.header_padding))
                    if head == b"\n" or head.endswith(b"\n\n"):
                        writer.write(b"\n")
                    fileio.copy_into(self.fd, body, end - body, writer)
                separator = b"\n"
                self.touch_lock()
            if separator:
                writer.write(b"\n")
        except BaseException:
            os.close(jfd)
            self.journal.retire(path)
            raise
        self.journal.commit_tail(path, jfd, self.fd, table.start[tail_from], writer.offset)


class MessageCopies:
    """Messages' bytes copied out of the mailbox under its lock, read like the mailbox itself.

    Small messages are kept in memory; big ones in an anonymous temporary
    file, so a session's memory does not grow with the message.
    """

    IN_MEMORY = 1 << 20

    def __init__(self, fd, messages):
        self._data = {}
        self._spool = None
        size = os.fstat(fd).st_size
        for m in messages:
            if m.start in self._data:
                continue
            if m.end - m.header <= self.IN_MEMORY:
                lo, hi = max(m.start - 1, 0), min(m.end + 6, size)
                raw = fileio.pread_all(fd, hi - lo, lo)
                if not _placed(m, size, lambda a, b: raw[a - lo:b - lo]):
                    raise StaleOffsets(f"message {m.uid} is not where the index says")
                self._data[m.start] = (m.header, raw[m.header - lo:m.end - lo])
                continue
            if not _placed(m, size, lambda a, b: fileio.pread_all(fd, b - a, a)):
                raise StaleOffsets(f"message {m.uid} is not where the index says")
            if self._spool is None:
                from .prepare import temporary_file
                self._spool = temporary_file()
            at = self._spool.seek(0, os.SEEK_END)
            fileio.copy_into(fd, m.header, m.end - m.header, fileio.Writer(self._spool.fileno(), at))
            self._data[m.start] = (m.header, at)

    def read(self, msg, start=None, end=None):
        lo = msg.header if start is None else start
        hi = msg.end if end is None else end
        base, data = self._data[msg.start]
        if isinstance(data, bytes):
            return data[lo - base:hi - base]
        return fileio.pread_all(self._spool.fileno(), hi - lo, data + lo - base)

    def open_range(self, msg, start=None, end=None):
        import io
        lo = msg.header if start is None else start
        hi = msg.end if end is None else end
        base, data = self._data[msg.start]
        if isinstance(data, bytes):
            return io.BytesIO(data[lo - base:hi - base])
        return fileio.reader(self._spool.fileno(), data + lo - base, data + hi - base)

    def close(self):
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class _NoBody:
    """The body of a message written whole as its head (the pseudo-message)."""

    body_size = 0
    body_crc = 0

    @staticmethod
    def body_chunks():
        return ()

    @staticmethod
    def body_bytes():
        return b""


def _trailer(prepared):
    """What follows a message's body: the blank line before the next From_ line (and the body's last newline)."""
    return b"\n" if prepared.body_ends_line else b"\n\n"


def _placed(msg, size, read):
    """Whether MSG is at its offset, READ(lo, hi) giving the file's bytes: From_ line, extent, X-UID."""
    if msg.end > size:
        return False
    expected = b"From " + msg.from_line.encode("utf-8", "surrogateescape")
    lead = b"\n" if msg.start else b""
    if read(msg.start - len(lead), msg.start + len(expected)) != lead + expected:
        return False
    after = read(msg.end, min(msg.end + 6, size))
    if not (after == b"" or after == b"\n" and msg.end + 1 == size or after == b"\nFrom "):
        return False
    if msg.uid:
        lo, hi = msg.block or (msg.header, msg.body)
        found = _X_UID.search(read(lo, hi))
        if found is None or int(found.group(1)) != msg.uid:
            return False
    return True


def _give_back_after(messages):
    """After parsing or rewriting MESSAGES at once: the memory that work freed goes back to the system.

    Otherwise a session that once opened or rewrote a big mailbox would
    keep the pages of that burst for as long as it runs.
    """
    if messages >= _RELEASE_AFTER:
        from ..core import memory
        memory.release_freed()


def _keyword_sets_in_use(table, changes):
    """The keyword sets of the messages (some rows' as CHANGES will make them): X-IMAPbase lists them all."""
    sets = table.keyword_sets
    used = [sets[n] for n in set(table.kw)] if len(sets) > 1 else []
    return used + [change[1] for change in changes.values() if change[1]]


def _key(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _prepared(source):
    """A PreparedMessage from one, or from the raw bytes of a message stored exactly (IMAP APPEND)."""
    if hasattr(source, "header_bytes"):
        return source
    from .prepare import prepare_bytes
    return prepare_bytes(source, quote=False)


def _pseudo_message(imapbase, padding):
    """The first message of a mailbox that holds no other: it carries the UID state, and clients never see it."""
    now = time.time()
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now))
    host = os.uname().nodename
    return b"".join([
        b"From MAILER-DAEMON ", from_line("", None).split(" ", 1)[1].encode(), b"\n",
        b"Date: ", stamp.encode(), b"\n",
        b"From: Mail System Internal Data <MAILER-DAEMON@", host.encode(), b">\n",
        b"Subject: ", PSEUDO_SUBJECT.encode(), b"\n",
        b"Message-ID: <", b"%d.%d@" % (int(now), os.getpid()), host.encode(), b">\n",
        render_block(flags=frozenset("RO"), keywords=(), uid=0, imapbase=imapbase, pseudo=True, padding=padding),
        b"\n", _PSEUDO_BODY])


def _separator_needed(fd, size):
    """What to write before a new From_ line: a newline unless the file ends with one (the separator's)."""
    if size == 0:
        return b""
    return b"" if os.pread(fd, 1, size - 1) == b"\n" else b"\n"


def _mark_modified(fd):
    """Give an in-place rewrite a precise mtime, so other readers' caches see the change."""
    st = os.fstat(fd)
    os.utime(fd, ns=(st.st_atime_ns, max(time.time_ns(), st.st_mtime_ns + 1)))


def _truncate_back(fd, size):
    """Undo a partial append: the spool never keeps half a message."""
    fileio.truncate(fd, size)
    try:
        os.fsync(fd)
    except OSError:
        pass
