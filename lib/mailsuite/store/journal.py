"""Crash records beside a mailbox: a killed writer never leaves it half-done, and recovery never cuts what others wrote.

Two kinds, named after the mailbox: `.alice.append` and `.alice.journal`
in the spool directory, or, where an unprivileged user may not create files
there (Debian's 2775 /var/mail), `alice.DEV.INO.append` and
`alice.DEV.INO.journal` in the owner's ~/.mailsuite/.

* An **append record** is written and fsynced (with its directory) before
  an append touches the mailbox.  It names the file's size before and after
  the append, the first bytes of the new message and checksums of all of
  it.  The append then extends the file to its final size in one
  ftruncate() and writes into the space, so at any moment the file is
  exactly one of the two recorded sizes; the record is removed after the
  fsync.  Recovery: if the message's first bytes are not where they should
  be, nothing of ours was written; if it is whole (checksums), it stays;
  otherwise the recorded region goes, and whatever another program (procmail,
  dovecot-lda) appended after the crash moves down in its place.
* A **tail journal** holds the new tail of the file for a rewrite that does
  not fit in place, followed by a trailer (device, inode, offset, length and
  the file's size before), fsynced before the mailbox is touched.  The
  rewrite sets the file's size to the new one in one ftruncate(), copies
  the journal in and fsyncs.  A sealed journal is replayed by the next
  process to take the lock; one without a trailer changed nothing yet.
  Bytes found beyond the recorded sizes belong to someone else: they are
  put into a new journal after the recovered tail, never cut.

Trust: a record is used only if it is a regular file with one link, owned
by root or by the mailbox's owner, that names the mailbox's device and
inode.  Anything else is logged and ignored, never applied.  Records a
root process writes are given to the mailbox's owner, so the owner's own
programs can finish them.  A record that exists but cannot be read or
retired stops the caller with `RecoveryPending`, a temporary failure:
going on could build on half a message.  A finished record that cannot be
removed (root's, in a directory the owner cannot write) is emptied
instead; an empty record, or one whose first line is empty, means nothing
to do.

`roll_forward()` is called by whoever takes the mailbox's write lock,
before anything else; `pending()` tells a reader that it must do so.
"""

import errno
import os
import stat
import zlib

from ..core import fileio, log
from .format import FROM_LINE_MAX, is_from_line

APPEND_MAGIC = b"MAILSUITE-APPEND-2"
TAIL_MAGIC = b"MAILSUITE-JOURNAL-2"
TRAILER_SIZE = 128
PREFIX_SIZE = 512               # leading bytes of an appended message kept in its record
KINDS = ("append", "journal")


class RecoveryPending(OSError):
    """A crash record exists that we may not use or finish: a temporary failure, never "nothing to do"."""

    def __init__(self, message):
        super().__init__(errno.EAGAIN, message)


class AppendRecord:
    """What an append is about to write, as its record keeps it."""

    def __init__(self, before, after, head, body_size, body_crc, trailer):
        self.before = before
        self.after = after
        self.head = head
        self.body_size = body_size
        self.body_crc = body_crc
        self.trailer = trailer

    def encode(self, st):
        prefix = self.head[:PREFIX_SIZE]
        fields = (APPEND_MAGIC, st.st_dev, st.st_ino, self.before, self.after, len(self.head),
                  zlib.crc32(self.head), self.body_size, self.body_crc, self.trailer.hex().encode(), len(prefix))
        return b" ".join(f if isinstance(f, bytes) else b"%d" % f for f in fields) + b"\n" + prefix


class Journal:
    def __init__(self, mailbox_path, owner=None):
        self.mailbox_path = mailbox_path
        self.owner = owner

    # --- where records live --------------------------------------------------

    def paths(self, kind, st):
        """(path, in the owner's home) for each place a record of this kind may live, in the order tried."""
        directory, name = os.path.split(self.mailbox_path)
        places = [(os.path.join(directory or ".", f".{name}.{kind}"), False)]
        if self.owner is not None and self.owner.home:
            places.append((os.path.join(self.owner.home, ".mailsuite", f"{name}.{st.st_dev:x}.{st.st_ino:x}.{kind}"),
                           True))
        return places

    def pending(self, fd):
        """Whether a crash record (of any kind, trusted or not) with something to do lies where ours would."""
        st = os.fstat(fd)
        for kind in KINDS:
            for path, _home in self.paths(kind, st):
                try:
                    rfd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError:
                    return True
                try:
                    if os.pread(rfd, 1, 0) not in (b"", b"\n"):
                        return True
                finally:
                    os.close(rfd)
        return False

    # --- recovery ------------------------------------------------------------

    def roll_forward(self, fd):
        """Finish what a killed process left: an interrupted append, then an interrupted rewrite."""
        st = os.fstat(fd)
        for kind in KINDS:
            for path, home in self.paths(kind, st):
                rfd = self._open_record(path, home, st)
                if rfd is None:
                    continue
                try:
                    if os.pread(rfd, 1, 0) in (b"", b"\n"):
                        continue                # an empty or finished record: nothing was left to finish
                    recover = self._recover_append if kind == "append" else self._recover_tail
                    recover(path, rfd, fd, st)
                finally:
                    os.close(rfd)

    def _open_record(self, path, home, mailbox_st):
        """An fd on a record we may trust, None when there is none (or it is ignored), RecoveryPending if stuck."""
        try:
            lst = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise RecoveryPending(f"{path}: crash record cannot be examined: {exc.strerror}") from None
        problem = _distrust(lst, mailbox_st) or (home and _distrust_directory(os.path.dirname(path), mailbox_st))
        if problem:
            log.current().warning("%s: crash record ignored, never applied: %s", path, problem)
            return None
        try:
            rfd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecoveryPending(f"{path}: a crash record of another process cannot be finished by this "
                                  f"user ({exc.strerror}); the mailbox waits for it") from None
        st = os.fstat(rfd)
        if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino):
            os.close(rfd)
            raise RecoveryPending(f"{path}: crash record changed while being opened")
        return rfd

    def retire(self, path, rfd=None):
        """A finished record goes; an append record is marked done, one we may not remove is emptied."""
        if path.endswith(".append"):
            fileio.pwrite_all(rfd, b"\n", 0)
            os.fsync(rfd)
            return
        try:
            fileio.unlink(path)
            fileio.fsync_dir(os.path.dirname(path))
            return
        except FileNotFoundError:
            return
        except PermissionError:
            if rfd is None:
                raise
        fileio.truncate(rfd, 0)
        os.fsync(rfd)

    def _recover_append(self, path, rfd, fd, st):
        head = os.pread(rfd, 512, 0).split(b"\n", 1)[0]
        fields = head.split()
        if len(fields) != 11 or fields[0] != APPEND_MAGIC:
            log.current().warning("%s: crash record in an unknown format ignored", path)
            self.retire(path, rfd)
            return
        dev, ino, before, after, head_len, head_crc, body_size, body_crc = (int(f) for f in fields[1:9])
        trailer = bytes.fromhex(fields[9].decode())
        prefix = os.pread(rfd, int(fields[10]), len(head) + 1)
        body_at = before + head_len
        if ((st.st_dev, st.st_ino) != (dev, ino) or st.st_size < after      # another file, or never begun
                or not _written_prefix(os.pread(fd, len(prefix), before), prefix)      # the bytes are another's
                or (_crc(fd, before, head_len) == head_crc and _crc(fd, body_at, body_size) == body_crc
                    and os.pread(fd, len(trailer), body_at + body_size) == trailer)):  # whole and fsynced
            self.retire(path, rfd)
            return
        foreign = st.st_size - after
        log.current().warning("%s: removing an interrupted append of %d bytes at %d%s", self.mailbox_path,
                              after - before, before, f"; keeping {foreign} bytes appended since" if foreign else "")
        if not foreign:
            fileio.truncate(fd, before)
            os.fsync(fd)
            self.retire(path, rfd)
            return
        jpath = self._journal_with(fd, st, before, b"", after)
        self.retire(path, rfd)
        self._finish(jpath, fd, st)

    def _recover_tail(self, path, rfd, fd, st):
        """Copy a sealed journal over the mailbox again, keeping what was appended since the crash."""
        size = os.fstat(rfd).st_size
        fields = os.pread(rfd, TRAILER_SIZE, size - TRAILER_SIZE).split() if size >= TRAILER_SIZE else []
        if len(fields) != 6 or fields[0] != TAIL_MAGIC:
            if size >= TRAILER_SIZE:
                log.current().warning("%s: journal without a valid trailer ignored", path)
            self.retire(path, rfd)          # never sealed: the mailbox was not touched
            return
        dev, ino, offset, length, old_size = (int(f) for f in fields[1:])
        foreign_at = None
        if (st.st_dev, st.st_ino) == (dev, ino) and length == size - TRAILER_SIZE:
            foreign_at = _foreign_start(fd, os.fstat(fd).st_size, old_size, offset + length)
            if foreign_at is None:
                _apply_tail(rfd, fd, offset, length)
        if foreign_at is None:
            self.retire(path, rfd)
            return
        log.current().warning("%s: keeping %d bytes appended after an interrupted rewrite", self.mailbox_path,
                              os.fstat(fd).st_size - foreign_at)
        jpath = self._journal_with(fd, st, offset, fileio.pread_all(rfd, length, 0), foreign_at)
        if jpath != path:
            self.retire(path, rfd)
        self._finish(jpath, fd, st)

    def _journal_with(self, fd, st, offset, content, foreign_at):
        """Seal a journal holding CONTENT for OFFSET on, then what others appended from FOREIGN_AT; its path.

        It is written under a temporary name and renamed into place, so a
        crash leaves either the old record or the new one, whole.
        """
        errors = []
        for path, home in self.paths("journal", st):
            try:
                if home:
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                temporary, jfd = self._create_at(path + ".new", st)
                break
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
        else:
            raise RecoveryPending("cannot write a journal to recover the mailbox: " + "; ".join(errors))
        try:
            size = os.fstat(fd).st_size
            writer = fileio.Writer(jfd, 0)
            writer.write(content)
            at_line_start = content.endswith(b"\n") if content else offset == 0 or os.pread(fd, 1, offset - 1) == b"\n"
            _copy_foreign(fd, foreign_at, size, writer, at_line_start)
            _seal(jfd, st, offset, writer.offset, size)
        finally:
            os.close(jfd)
        fileio.rename(temporary, path)
        fileio.fsync_dir(os.path.dirname(path))
        return path

    def _finish(self, path, fd, st):
        rfd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._recover_tail(path, rfd, fd, st)
        finally:
            os.close(rfd)

    # --- writing records -----------------------------------------------------

    def record_append(self, fd, record):
        """Write and sync the record of an append about to happen; returns its fd, for `appended`."""
        st = os.fstat(fd)
        rfd = self._append_record_file(st)
        try:
            fileio.pwrite_all(rfd, record.encode(st), 0)
            os.fdatasync(rfd)
        except BaseException:
            os.close(rfd)
            raise
        return rfd

    @staticmethod
    def appended(rfd):
        """The append is done (fsynced, or undone): mark its record so.

        Not synced: a record that comes back after a power cut finds its
        message whole (or its region gone) and is marked done then.
        """
        try:
            fileio.pwrite_all(rfd, b"\n", 0)
        finally:
            os.close(rfd)

    def _append_record_file(self, st):
        """The append record file, made once (with a directory fsync) and kept: the first place we may use."""
        errors = []
        for path, home in self.paths("append", st):
            try:
                if home:
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                try:
                    return self._create_at(path, st, replace=False)[1]
                except FileExistsError:
                    pass
                rfd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                if _distrust(os.fstat(rfd), st) is None:
                    return rfd
                os.close(rfd)
                if os.geteuid() == 0:                   # another user's file where ours goes: ours now
                    return self._create_at(path, st)[1]
                errors.append(f"{path}: not ours to use")
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
        raise OSError(errno.EACCES, "cannot create a crash record: " + "; ".join(errors))

    def begin_tail(self, fd):
        """A new, empty tail journal: (path, fd).  Write the new tail from offset 0."""
        return self._create("journal", os.fstat(fd))

    def commit_tail(self, path, jfd, fd, offset, length):
        """Seal the journal, then copy it over the mailbox from `offset`; durable on return."""
        try:
            st = os.fstat(fd)
            _seal(jfd, st, offset, length, st.st_size)
            fileio.fsync_dir(os.path.dirname(path))
            _apply_tail(jfd, fd, offset, length)
        finally:
            os.close(jfd)
        self.retire(path)

    def _create(self, kind, st):
        errors = []
        for path, home in self.paths(kind, st):
            try:
                if home:
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                return self._create_at(path, st)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
        raise OSError(errno.EACCES, "cannot create a crash record: " + "; ".join(errors))

    def _create_at(self, path, st, *, replace=True):
        """A fresh record file at PATH (in place of what was there with REPLACE), belonging to the mailbox's owner.

        Its directory is fsynced, so the file is there after a power cut.
        """
        if replace:
            fileio.unlink_quietly(path)
        rfd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.geteuid() == 0 and st.st_uid != 0:
                os.fchown(rfd, st.st_uid, -1)
            fileio.fsync_dir(os.path.dirname(path))
        except BaseException:
            os.close(rfd)
            raise
        return path, rfd


def _distrust(lst, mailbox_st):
    """Why a record may not be used, or None."""
    if not stat.S_ISREG(lst.st_mode):
        return "not a regular file"
    if lst.st_nlink != 1:
        return f"has {lst.st_nlink} links"
    if lst.st_uid not in (0, mailbox_st.st_uid):
        return f"owned by uid {lst.st_uid}, neither root nor the mailbox's owner"
    return None


def _distrust_directory(directory, mailbox_st):
    try:
        st = os.lstat(directory)
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    if st.st_uid not in (0, mailbox_st.st_uid):
        return f"{directory} belongs to uid {st.st_uid}"
    return None


def _written_prefix(found, expected):
    """Whether FOUND is EXPECTED as far as it was written, then zeros (the space the append reserved)."""
    if len(found) != len(expected):
        return False
    return all(a == b or a == 0 for a, b in zip(found, expected))


def _crc(fd, offset, length):
    value = 0
    while length > 0:
        chunk = os.pread(fd, min(length, fileio.CHUNK), offset)
        if not chunk:
            break
        value = zlib.crc32(chunk, value)
        offset += len(chunk)
        length -= len(chunk)
    return value


def _copy_foreign(fd, start, end, writer, at_line_start):
    """Copy bytes [start, end) another program wrote, minus its leading newlines, as a whole line."""
    first = True
    while start < end:
        chunk = os.pread(fd, min(fileio.CHUNK, end - start), start)
        if not chunk:
            break
        start += len(chunk)
        if first:
            chunk = chunk.lstrip(b"\n")
            if not chunk:
                continue
            if not at_line_start:
                writer.write(b"\n")
            first = False
        writer.write(chunk)


def _seal(jfd, st, offset, length, old_size):
    trailer = b"%s %d %d %d %d %d" % (TAIL_MAGIC, st.st_dev, st.st_ino, offset, length, old_size)
    os.fsync(jfd)
    fileio.pwrite_all(jfd, trailer.ljust(TRAILER_SIZE - 1) + b"\n", length)
    os.fsync(jfd)


def _foreign_start(fd, size, old_size, new_size):
    """Where bytes appended by another program after the crash begin, or None.

    A rewrite sets the file's size from old_size to new_size in one step,
    so the crash left it at one of the two; another program appended from
    there.  Beyond both, the start is told by which of the two offsets a
    From_ line begins at.
    """
    lo, hi = sorted((old_size, new_size))
    if size <= lo or size == hi:
        return None
    if size < hi:
        return lo
    return hi if _starts_message(fd, hi) else lo


def _starts_message(fd, offset):
    return is_from_line(os.pread(fd, FROM_LINE_MAX + 8, offset).lstrip(b"\n"))


def _apply_tail(jfd, fd, offset, length):
    fileio.truncate(fd, offset + length)
    fileio.copy_range(jfd, 0, fd, offset, length)
    os.fsync(fd)
