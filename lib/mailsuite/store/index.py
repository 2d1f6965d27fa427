"""A per-user cache of mailbox indexes, so a re-scan reads only what is new.

One file per mailbox in `index_dir` (under the user's home by default)
holds the file's identity when it was scanned (device, inode, size, mtime
and ctime: a program that restores a file's mtime after rewriting it
cannot restore its ctime), its last 64 bytes, the mailbox's UID state and
the scan itself as fixed-size columns (store/table.py).  A process maps
the file and uses the columns where they lie: nothing is copied into
Python objects, and the pages are shared by every session that has the
mailbox open.  `Mailbox.scan()` reuses a snapshot when the mailbox file is
unchanged, scans only the new tail when the file merely grew (same inode,
same bytes where the old end was), and falls back on the remembered UID
state when the file lost its own (a mail reader deleted the first
message, or emptied the file).

A snapshot is written to a temporary file and renamed over the old one,
never changed in place, so a process killed while writing leaves the old
snapshot whole, and a mapped one never changes under its reader; a
checksum over the whole file catches anything else.  Two processes that
store at once keep the newest state (by the mailbox file's ctime).  The
directory also keeps the user's UIDVALIDITY counter, so a value is never
given out twice.

The cache is an optimisation: any error in it is treated as a miss, never
as a failure of the mailbox.
"""

import array
import fcntl
import mmap
import os
import struct
import zlib

from .locking import pid_alive
from .table import COLUMNS, Table

_MAGIC = b"MSIDX\x00\x02\x00"
# magic, dev, ino, size, mtime_ns, ctime_ns, rows, uidvalidity, uidlast, valid rows, state bits,
# then the lengths of: path, tail, base keywords, keyword sets, From_ lines; then the checksum of what follows
_HEADER = struct.Struct("<8s5qqqqqIIIIIqI")
_HAS_BASE, _IN_FILE = 1, 2
_COUNTER = "uidvalidity"
_CHECK_WINDOW = 1 << 20          # bytes of a snapshot checked at a time (a multiple of the page size)
_LEGACY = "index.sqlite"          # the cache's former home; its UIDVALIDITY counter is carried over


class Snapshot:
    """One scan of a mailbox file: its key and tail, the table, the UID state, and the trusted rows."""

    __slots__ = ("key", "tail", "table", "imapbase", "in_file", "valid")

    def __init__(self, key, tail, table, imapbase, in_file, valid):
        self.key = key
        self.tail = tail
        self.table = table
        self.imapbase = imapbase          # (uidvalidity, uidlast, keywords) or None
        self.in_file = in_file            # whether the file holds that state itself
        self.valid = valid                # leading rows whose X-UIDs hold (table.valid_rows)


class IndexCache:
    """The snapshots of one user's mailboxes, one file each, in DIRECTORY."""

    def __init__(self, directory):
        self.directory = directory

    def _path(self, mailbox_path):
        raw = mailbox_path.encode("utf-8", "surrogateescape")
        name = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"      # the file holds the path, checked on load
        return os.path.join(self.directory, name + ".idx")

    def load(self, mailbox_path):
        """The Snapshot stored for MAILBOX_PATH, or None."""
        try:
            fd = os.open(self._path(mailbox_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER.size:
                return None
            data = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        try:
            if not _whole(data):
                return None
            return _decode(memoryview(data), mailbox_path)
        except (ValueError, TypeError, struct.error, UnicodeDecodeError):
            return None

    def store(self, mailbox_path, snapshot):
        """Keep SNAPSHOT for other processes, unless the file already holds a newer state of the mailbox."""
        path = self._path(mailbox_path)
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            self._make_directory()
            self.remove_leftovers()
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                for piece in _encode(snapshot, mailbox_path):
                    view = memoryview(piece).cast("B")
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            with self._locked():
                if _newer_stored(path, snapshot.key):
                    os.unlink(temporary)
                else:
                    _replace(temporary, path)
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def next_uidvalidity(self, floor):
        """A UIDVALIDITY above every one given before (and at least FLOOR, the time); None if the cache fails."""
        try:
            self._make_directory()
            with self._locked():
                path = os.path.join(self.directory, _COUNTER)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    text = os.pread(fd, 32, 0).strip()
                    last = int(text) if text.isdigit() else self._legacy_counter()
                    value = max(floor, last + 1)
                    data = b"%d\n" % value
                    os.pwrite(fd, data.ljust(32), 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            return value
        except (OSError, ValueError):
            return None

    def _legacy_counter(self):
        """The counter the former sqlite cache kept, so its values are not given out again."""
        path = os.path.join(self.directory, _LEGACY)
        if not os.path.exists(path):
            return 0
        try:
            import sqlite3
        except ImportError:             # the interpreter's library unreadable after a privilege drop
            return 0
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM counter WHERE name = 'uidvalidity'").fetchone()
            finally:
                db.close()
            return int(row[0]) if row else 0
        except (sqlite3.Error, ValueError, TypeError):
            return 0

    def _make_directory(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def _locked(self):
        return _DirectoryLock(os.path.join(self.directory, ".lock"))

    def remove_leftovers(self):
        """Temporary files of writers that were killed (their process is gone)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            parts = name.split(".")
            if len(parts) == 4 and parts[1] == "idx" and parts[3] in ("tmp", "old") and parts[2].isdigit():
                if not pid_alive(int(parts[2])):
                    try:
                        os.unlink(os.path.join(self.directory, name))
                    except OSError:
                        pass


class _DirectoryLock:
    """An exclusive flock on the cache directory's lock file, for a few system calls at a time."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _replace(temporary, path):
    """Put TEMPORARY in PATH's place: the old file moved aside first, then removed.

    Renaming over an existing file makes ext4 write the new one out at
    once (7 ms for a 100,000-message snapshot, under the mailbox lock);
    the checksum makes that unnecessary.  A reader that looks in between
    finds no snapshot and looks again under the lock.
    """
    old = f"{path}.{os.getpid()}.old"
    try:
        os.rename(path, old)
    except FileNotFoundError:
        old = None
    os.rename(temporary, path)
    if old:
        os.unlink(old)


def _whole(data):
    """Whether the mapped snapshot DATA matches its checksum.

    The checksum is taken a window at a time, each window's pages let go of
    afterwards: the check must not leave the whole file resident (a session
    then touches only the columns it reads, a few bytes a message).
    """
    try:
        checksum = _HEADER.unpack_from(data)[-1]
    except struct.error:
        return False
    crc = 0
    at = _HEADER.size
    for window in range(0, len(data), _CHECK_WINDOW):
        end = min(window + _CHECK_WINDOW, len(data))
        with memoryview(data)[at:end] as piece:
            crc = zlib.crc32(piece, crc)
        data.madvise(mmap.MADV_DONTNEED, window, end - window)
        at = end
    return crc == checksum


def _newer_stored(path, key):
    """Whether the stored snapshot is of the same file in a later state than KEY (by ctime)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
        stored = _HEADER.unpack(head)
    except (OSError, struct.error):
        return False
    return stored[0] == _MAGIC and tuple(stored[1:3]) == tuple(key[:2]) and stored[5] > key[4]


def _align(n):
    return -n % 8


def _encode(snapshot, mailbox_path):
    """The pieces of the file: header, variable parts, columns, From_ lines; checksummed."""
    table = snapshot.table
    uidvalidity, uidlast, keywords = snapshot.imapbase or (0, 0, ())
    bits = (_HAS_BASE if snapshot.imapbase is not None else 0) | (_IN_FILE if snapshot.in_file else 0)
    texts = [mailbox_path.encode("utf-8", "surrogateescape"), bytes(snapshot.tail),
             " ".join(keywords).encode("utf-8"),
             "\n".join(" ".join(k) for k in table.keyword_sets[1:]).encode("utf-8")]
    body = []
    for text in texts:
        body += [text, bytes(_align(len(text)))]
    for name, _code in COLUMNS:
        column = getattr(table, name)
        raw = memoryview(column).cast("B")
        body += [raw, bytes(_align(len(raw)))]
    body.append(table.blob)
    checksum = 0
    for piece in body:
        checksum = zlib.crc32(piece, checksum)
    header = _HEADER.pack(_MAGIC, *snapshot.key, len(table), uidvalidity, uidlast, snapshot.valid, bits,
                          *(len(t) for t in texts), len(table.blob), checksum)
    return [header, *body]


def _decode(data, mailbox_path):
    """A Snapshot over the mapped bytes DATA, or None if they are not a whole snapshot of MAILBOX_PATH."""
    (magic, dev, ino, size, mtime, ctime, rows, uidvalidity, uidlast, valid, bits,
     path_len, tail_len, keywords_len, sets_len, blob_len, checksum) = _HEADER.unpack_from(data)
    if magic != _MAGIC or not 0 <= valid <= rows:
        return None
    at = _HEADER.size
    texts = []
    for length in (path_len, tail_len, keywords_len, sets_len):
        texts.append(bytes(data[at:at + length]))
        at += length + _align(length)
    if texts[0] != mailbox_path.encode("utf-8", "surrogateescape"):
        return None
    columns = {}
    for name, code in COLUMNS:
        width = array.array(code).itemsize
        raw = data[at:at + rows * width]
        if len(raw) != rows * width:
            return None
        columns[name] = raw.cast(code)
        at += rows * width + _align(rows * width)
    blob = data[at:at + blob_len]
    if len(blob) != blob_len or at + blob_len != len(data):
        return None
    lines = texts[3].decode("utf-8").split("\n") if texts[3] else []
    sets = ((),) + tuple(tuple(line.split(" ")) for line in lines)
    keywords = tuple(texts[2].decode("utf-8").split())
    imapbase = (uidvalidity, uidlast, keywords) if bits & _HAS_BASE else None
    table = Table(columns, blob, sets)
    return Snapshot((dev, ino, size, mtime, ctime), texts[1], table, imapbase, bool(bits & _IN_FILE), valid)

