"""The mbox store: one mailbox file, opened safely, locked, appended to and rewritten in place.

Every reader and writer in mailsuite goes through `Mailbox`:

* opening refuses symlinks, hard links, non-regular and foreign-owned files;
* `locked()` takes fcntl + dotlock (locking.py) and first finishes whatever
  a killed process left half-done (journal.py);
* `scan()` indexes the file (mbox_scan.py), reusing the index cache
  (index.py) and reading only an appended tail when the file merely grew;
* `append()` writes one message and fsyncs it, truncating back on error;
* `sync()` assigns UIDs to new messages (they only ever ascend), applies
  flag changes and expunges: in place where the new store headers fit the
  padding reserved for them, else by writing the new tail of the file to a
  journal and copying it over, never by renaming a new file over the spool.

The format rules (From_ lines, quoting, the store's headers) are in
mbox_format.py; this module re-exports the names servers use.
"""

import errno
import os
import stat
import time
from contextlib import contextmanager

from . import fileio
from .index import IndexCache
from .journal import Journal
from .locking import mailbox_lock
from .mbox_format import (HIDDEN_HEADERS, STORE_HEADERS, STRIP_ON_DELIVERY, SYSTEM_FLAGS, MailboxError,
                          from_line, header_lines_without, quote_from_lines, render_block, served_body,
                          served_header, unquote_from_lines, valid_keyword)
from .mbox_scan import HEADER_PARSE_LIMIT, Index, Message, flag_set, scan_range, validate_uids

__all__ = ["Mailbox", "MailboxError", "Index", "Message", "SYSTEM_FLAGS", "STORE_HEADERS", "HIDDEN_HEADERS",
           "STRIP_ON_DELIVERY", "HEADER_PARSE_LIMIT", "from_line", "header_lines_without", "quote_from_lines",
           "unquote_from_lines", "served_header", "served_body", "valid_keyword", "scan_range"]


class Mailbox:
    """One mbox file.  Hold `locked()` for anything that writes."""

    def __init__(self, path, cfg, *, owner=None, fd=None, check_owner=True):
        self.path = path
        self.cfg = cfg
        self.owner = owner
        self.fd = fd
        self._lock = None
        self._lock_depth = 0
        self._check_owner = check_owner
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
        return self.fd is not None

    def close(self):
        if self.fd is not None and not self._lock_depth:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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

    def touch_lock(self):
        if self._lock is not None:
            self._lock.touch()

    def _open_cache(self):
        template = self.cfg.mailsuite.index_dir
        if not template or self.owner is None:
            return None
        return IndexCache(self.cfg.expand_user_path(template, self.owner.home))

    def scan(self):
        """The index of the whole file; only the appended tail is parsed when the cache is current.

        The cache holds messages as parsed (X-UIDs not yet validated), and
        a scan is stored only if the file did not change while it ran; the
        cache itself keeps the newest state when two processes store at once.
        """
        if self.fd is None:
            return Index([], 0, 0, (), 0)
        st = os.fstat(self.fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if self._memo is not None and self._memo[0] == key:
            cached = self._memo                     # this object's own last scan: no cache read at all
        else:
            cached = self.cache.load(self.path) if self.cache else None
        found = None
        if cached and cached[0][:2] == key[:2]:
            cached_key, tail_sig, (old_messages, old_base) = cached
            if cached_key == key:
                found, hit = (old_messages, old_base), True
            elif st.st_size > cached_key[2] and old_messages and self._tail_signature(cached_key[2]) == tail_sig:
                found, hit = self._scan_grown(old_messages, st.st_size), False
        if found is None:
            found, hit = scan_range(self.fd, 0, st.st_size), False
        messages, imapbase = found
        if not hit and os.fstat(self.fd).st_mtime_ns == st.st_mtime_ns:
            self._remember(key, messages, imapbase)
        uidvalidity, uidlast, keywords = imapbase or (0, 0, ())
        return Index(validate_uids(messages, imapbase), uidvalidity, uidlast, keywords, st.st_size)

    def _remember(self, key, messages, imapbase):
        """Keep a scan for this object's next scan, and in the index cache for other processes."""
        tail = self._tail_signature(key[2])
        self._memo = (key, tail, (messages, imapbase))
        if self.cache:
            self.cache.store(self.path, key, tail, (messages, imapbase))

    def _scan_grown(self, old_messages, size):
        """The file only grew: parse the new tail, and the first message again.

        The first message is re-read because its X-IMAPbase may have been
        raised in place (an IMAP APPEND does so before it appends).
        """
        last = old_messages[-1]
        tail, imapbase = scan_range(self.fd, last.start, size)
        if last.start == 0:
            return tail, imapbase
        head, imapbase = scan_range(self.fd, 0, old_messages[1].start)
        return head + old_messages[1:-1] + tail, imapbase

    def _tail_signature(self, size):
        return os.pread(self.fd, 64, max(size - 64, 0)) if self.fd is not None else b""

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

    def append(self, source, *, sender, date=None, flags=frozenset(), keywords=(), extra_headers=(),
               assign_uid=False):
        """Append one message; returns its UID (0 unless assign_uid).  Caller holds locked().

        With assign_uid (IMAP APPEND, COPY) every earlier message gets its UID
        first, so UIDs keep ascending, and UIDLAST is raised before the
        message is written: a failed append leaves a harmless gap, never a
        UID given twice.
        """
        self._require_lock()
        index = self.sync() if assign_uid else None
        uid = index.uidnext if index else 0
        keywords = tuple(k for k in keywords if valid_keyword(k))
        if uid and index.all:
            base_keywords = index.keywords + tuple(k for k in keywords if k not in index.keywords)
            self._rewrite(index, {}, (), (index.uidvalidity, uid, base_keywords))
        prepared = _prepared(source)
        old_size = os.fstat(self.fd).st_size
        prefix = _separator_needed(self.fd, old_size)
        first_of_file = index is not None and not index.all
        imapbase = (index.uidvalidity or _new_uidvalidity(), uid, keywords) if first_of_file else None
        block = render_block(flags=flags, keywords=keywords, uid=uid, imapbase=imapbase,
                             padding=self.cfg.delivery.header_padding)
        head = b"".join([prefix, b"From ", from_line(sender, date).encode(), b"\n",
                         *extra_headers, prepared.header_bytes, block, b"\n"])
        writer = fileio.Writer(self.fd, old_size)
        record = self.journal.record_append(self.fd, old_size, old_size + len(head) + prepared.body_size + 1)
        try:
            writer.write(head)
            last = b"\n"
            for chunk in prepared.body_chunks():
                if chunk:
                    writer.write(chunk)
                    last = chunk[-1:]
            writer.write(b"\n" if last == b"\n" else b"\n\n")
            os.fsync(self.fd)
        except BaseException:
            _truncate_back(self.fd, old_size)
            raise
        finally:
            fileio.unlink_quietly(record)
            if prepared is not source:
                prepared.close()
        return uid

    def sync(self, flags=None, expunge=(), keywords=None):
        """Assign missing UIDs, apply flag changes, drop expunged messages; returns the new index.

        `flags` maps uid -> (flags, keywords); `expunge` holds uids; `keywords`
        adds names to the mailbox's keyword list.  Caller holds locked().
        Messages appended by others since the caller's last scan are kept as
        they are, and get their UIDs here.
        """
        self._require_lock()
        index = self.scan()
        if not index.all:
            return index
        flags = flags or {}
        expunge = set(expunge)
        next_uid = index.uidnext
        base_keywords = list(index.keywords)
        changes = {}
        for m in index.messages:
            uid = m.uid
            if not uid:
                uid, next_uid = next_uid, next_uid + 1
            new_flags, new_keywords = flags.get(m.uid, (m.flags, m.keywords)) if m.uid else (m.flags, m.keywords)
            new_flags = frozenset(c for c in new_flags if c in SYSTEM_FLAGS)
            new_keywords = tuple(k for k in new_keywords if valid_keyword(k))
            base_keywords += [k for k in new_keywords if k not in base_keywords]
            if (uid, new_flags, new_keywords) != (m.uid, m.flags, m.keywords):
                changes[m.start] = (new_flags, new_keywords, uid)
        base_keywords += [k for k in keywords or () if valid_keyword(k) and k not in base_keywords]
        imapbase = (index.uidvalidity or _new_uidvalidity(), max(next_uid - 1, index.uidlast), tuple(base_keywords))
        drop = {m.start for m in index.messages if m.uid and m.uid in expunge}
        if not changes and not drop and (index.uidvalidity, index.uidlast, index.keywords) == imapbase:
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
        wanted = {m.uid: updates[m.uid](m.flags, m.keywords) for m in current.messages if m.uid in updates}
        return self.sync(flags=wanted)

    def _require_lock(self):
        if not self._lock_depth:
            raise RuntimeError("mailbox must be locked for writing")
        if self.fd is None:
            raise MailboxError(f"{self.path}: does not exist")

    def _rewrite(self, index, changes, expunge, imapbase):
        """Apply store-header changes: in place where they fit, else journal the rest of the file.

        `changes` maps a message's offset to (flags, keywords, uid); `expunge`
        holds offsets to drop; the first surviving message carries imapbase.
        """
        survivors = [m for m in index.all if m.start not in expunge]
        wanted = {}
        for position, m in enumerate(survivors):
            base = imapbase if position == 0 else None
            change = changes.get(m.start)
            if change is None and base is None and m is not index.all[0]:
                continue
            new_flags, new_keywords, uid = change or (m.flags, m.keywords, m.uid)
            wanted[m.start] = (new_flags, new_keywords, uid, base)
        tail_from = min(expunge, default=None)
        kept = []                   # the new index up to tail_from, built as we write: no re-read
        for m in survivors:
            if tail_from is not None and m.start >= tail_from:
                break
            plan = wanted.get(m.start)
            if plan is None:
                kept.append(m)
                continue
            new_flags, new_keywords, uid, base = plan
            size = m.block[1] - m.block[0] if m.block else 0
            block = render_block(flags=new_flags, keywords=new_keywords, uid=uid, imapbase=base,
                                 pseudo=m.pseudo, pad_to=size) if m.block else b""
            if len(block) != size or not size:
                tail_from = m.start
                break
            fileio.pwrite_all(self.fd, block, m.block[0])
            kept.append(Message(m.start, m.header, m.body, m.end, m.from_line, uid, flag_set(new_flags),
                                tuple(new_keywords), m.block, m.pseudo, m.client_size, m.dot_lines))
        if tail_from is not None:
            self._rewrite_tail(tail_from, survivors, wanted)
        _mark_modified(self.fd)
        os.fsync(self.fd)
        st = os.fstat(self.fd)
        messages = kept + (scan_range(self.fd, tail_from, st.st_size)[0] if tail_from is not None else [])
        if not messages:
            imapbase = None
        self._remember((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), messages, imapbase)
        uidvalidity, uidlast, keywords = imapbase or (0, 0, ())
        return Index(validate_uids(messages, imapbase), uidvalidity, uidlast, keywords, st.st_size)

    def _rewrite_tail(self, tail_from, survivors, wanted):
        """Write the new tail of the file to a journal, then copy it over the file from tail_from on."""
        path, jfd = self.journal.begin_tail()
        writer = fileio.Writer(jfd, 0)
        separator = b""
        for m in survivors:
            if m.start < tail_from:
                continue
            plan = wanted.get(m.start)
            writer.write(separator)
            fileio.copy_into(self.fd, m.start, m.header - m.start, writer)
            if plan is None:
                fileio.copy_into(self.fd, m.header, m.end - m.header, writer)
            else:
                new_flags, new_keywords, uid, base = plan
                header = self.read(m, m.header, m.body)
                writer.write(b"".join(line + b"\n" for line in header_lines_without(header, STORE_HEADERS)))
                writer.write(render_block(flags=new_flags, keywords=new_keywords, uid=uid, imapbase=base,
                                          pseudo=m.pseudo, padding=self.cfg.delivery.header_padding))
                writer.write(b"\n")
                fileio.copy_into(self.fd, m.body, m.end - m.body, writer)
            separator = b"\n"
            self.touch_lock()
        if separator:
            writer.write(b"\n")
        self.journal.commit_tail(path, jfd, self.fd, tail_from, writer.offset)


def _prepared(source):
    """A PreparedMessage from one, or from the raw bytes of a message (IMAP APPEND)."""
    if hasattr(source, "header_bytes"):
        return source
    from .deliver import prepare_bytes
    return prepare_bytes(source)


def _separator_needed(fd, size):
    """What to write before a new From_ line so that a blank line precedes it."""
    if size == 0:
        return b""
    tail = os.pread(fd, 2, max(size - 2, 0))
    if tail == b"\n\n":
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _mark_modified(fd):
    """Give an in-place rewrite a precise mtime, so other readers' caches see the change."""
    st = os.fstat(fd)
    os.utime(fd, ns=(st.st_atime_ns, max(time.time_ns(), st.st_mtime_ns + 1)))


def _new_uidvalidity():
    return int(time.time())


def _truncate_back(fd, size):
    """Undo a partial append: the spool never keeps half a message."""
    os.ftruncate(fd, size)
    try:
        os.fsync(fd)
    except OSError:
        pass
