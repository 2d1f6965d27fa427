"""Crash records kept beside a mailbox, so a killed writer never leaves it half-done.

Two kinds, both named after the mailbox (`.alice.append`, `.alice.journal`)
and kept beside it, or in the owner's ~/.mailsuite/ when the spool
directory is not writable (Debian's 2775 /var/mail for an unprivileged
user):

* An **append record** names the file's size before and after an append.
  It is written before the append and removed after its fsync; a file
  found in between holds half a message and is cut back.  It is not
  fsynced itself: it guards against a killed process, whose page cache
  survives.
* A **tail journal** holds the new tail of the file for a rewrite that does
  not fit in place, followed by a trailer (the file's device, inode, the
  offset and the length), fsynced before the mailbox is touched.  A
  journal with a complete trailer is copied over the mailbox again by the
  next process that takes the lock; one without is discarded, the mailbox
  not yet having been changed.

`roll_forward()` is called by whoever takes the mailbox locks, before
anything else.
"""

import errno
import os

from ..core import fileio

MAGIC = b"MAILSUITE-JOURNAL-1"
TRAILER_SIZE = 128


class Journal:
    def __init__(self, mailbox_path, owner=None):
        self.mailbox_path = mailbox_path
        self.owner = owner

    def paths(self, kind):
        """Where a record of this kind may live, in the order tried."""
        directory, name = os.path.split(self.mailbox_path)
        paths = [os.path.join(directory or ".", f".{name}.{kind}")]
        if self.owner is not None:
            paths.append(os.path.join(self.owner.home, ".mailsuite", f"{name}.{kind}"))
        return paths

    def roll_forward(self, fd):
        """Finish what a killed process left: undo a partial append, redo an interrupted rewrite."""
        for kind, apply in (("append", _undo_append), ("journal", _replay_tail)):
            for path in self.paths(kind):
                try:
                    jfd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    apply(jfd, fd)
                finally:
                    os.close(jfd)
                os.unlink(path)
                fileio.fsync_dir(os.path.dirname(path))

    def record_append(self, fd, before, after):
        """Note an append from size `before` to `after`; returns the record's path, to remove once done."""
        path, rfd = self._create("append")
        try:
            st = os.fstat(fd)
            os.write(rfd, b"APPEND %d %d %d %d\n" % (st.st_dev, st.st_ino, before, after))
        finally:
            os.close(rfd)
        return path

    def begin_tail(self):
        """A new, empty tail journal: (path, fd).  Write the new tail from offset 0."""
        return self._create("journal")

    def commit_tail(self, path, jfd, fd, offset, length):
        """Seal the journal, then copy it over the mailbox from `offset`; durable on return."""
        try:
            st = os.fstat(fd)
            trailer = b"%s %d %d %d %d" % (MAGIC, st.st_dev, st.st_ino, offset, length)
            os.fsync(jfd)
            fileio.pwrite_all(jfd, trailer.ljust(TRAILER_SIZE - 1) + b"\n", length)
            os.fsync(jfd)
            fileio.fsync_dir(os.path.dirname(path))
            _copy_tail(jfd, fd, offset, length)
        finally:
            os.close(jfd)
        os.unlink(path)
        fileio.fsync_dir(os.path.dirname(path))

    def _create(self, kind):
        errors = []
        for path in self.paths(kind):
            directory = os.path.dirname(path)
            try:
                if directory != os.path.dirname(self.mailbox_path):
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                fileio.unlink_quietly(path)
                return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
        raise OSError(errno.EACCES, "cannot create a journal: " + "; ".join(errors))


def _undo_append(rfd, fd):
    """A file between the record's two sizes holds half a message: cut it back."""
    fields = os.read(rfd, 256).split()
    if len(fields) != 5 or fields[0] != b"APPEND":
        return
    dev, ino, before, after = (int(f) for f in fields[1:])
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) == (dev, ino) and before <= st.st_size < after:
        os.ftruncate(fd, before)
        os.fsync(fd)


def _replay_tail(jfd, fd):
    """Copy a sealed journal over the mailbox again; an unsealed one changed nothing yet."""
    size = os.fstat(jfd).st_size
    if size < TRAILER_SIZE:
        return
    fields = os.pread(jfd, TRAILER_SIZE, size - TRAILER_SIZE).rstrip(b" \n").split()
    if len(fields) != 5 or fields[0] != MAGIC:
        return
    dev, ino, offset, length = (int(f) for f in fields[1:])
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino) or length != size - TRAILER_SIZE:
        return
    _copy_tail(jfd, fd, offset, length)


def _copy_tail(jfd, fd, offset, length):
    fileio.copy_range(jfd, 0, fd, offset, length)
    os.ftruncate(fd, offset + length)
    os.fsync(fd)
