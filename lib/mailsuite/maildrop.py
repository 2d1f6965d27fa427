"""The maildrop: how an unprivileged `sendmail` hands mail to the MTA.

The directory is 1733 root (anyone may create a file, nobody may list or
touch another's), so the owner uid of a drop file is who sent it: that is
the authentication, as with Postfix's maildrop.  `sendmail` writes
.ID.tmp, fsyncs it and renames it to ID only when complete, so the pickup
never sees half a message; the pickup in turn trusts nothing inside the
file except what it can check: it must be a regular file with one link,
and the sender identity comes from the file's owner, not from its content.

A drop file is a version line, one JSON line with the submitter's request
(sender from -f, recipients, -F, DSN options) and the message (LF).
"""

import errno
import json
import os
import stat

from . import fileio
from .queueid import new_id, valid_id

MAGIC = b"mailsuite-drop 1\n"
MAX_REQUEST = 1 << 20


class DropError(Exception):
    """A drop file that is not acceptable (wrong type, links, garbage)."""


class DropWriter:
    """A new drop file being written by sendmail; `commit()` makes it visible."""

    def __init__(self, directory, request):
        self.directory = directory
        self.id = None
        for _attempt in range(10):
            qid = new_id()
            self.tmp = os.path.join(directory, f".{qid}.tmp")
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                break
            except FileExistsError:
                continue
        else:
            raise OSError(errno.EEXIST, "cannot create a unique drop file", directory)
        self.id = qid
        self.file = open(fd, "wb", buffering=1 << 16)
        self.file.write(MAGIC)
        self.file.write(json.dumps(request, separators=(",", ":")).encode("ascii") + b"\n")

    def write(self, data):
        self.file.write(data)

    def commit(self):
        """fsync, then rename to the final name: the file appears whole, with one link.

        (link() then unlink() would show the pickup a file with two links,
        which it must treat as hostile.)  In the sticky maildrop a rename
        can never replace another user's file; a name of our own that is
        taken already gets a new id."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        while True:
            final = os.path.join(self.directory, self.id)
            if not os.path.lexists(final):
                try:
                    os.rename(self.tmp, final)
                    break
                except PermissionError:
                    pass
            self.id = new_id()
        fileio.fsync_dir(self.directory, required=False)   # users cannot read the 1733 maildrop
        return self.id

    def abort(self):
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass




class DropFile:
    """A drop file opened by the pickup: checked, with the request decoded."""

    def __init__(self, directory, name):
        if not valid_id(name):
            raise DropError(f"{name}: not a drop file name")
        self.name = name
        self.path = os.path.join(directory, name)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        self.file = open(self.fd, "rb", buffering=1 << 16)
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            self.close()
            raise DropError(f"{name}: not a regular file")
        self.stat = st
        self.owner = st.st_uid
        self.origin = f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"

    def linked(self):
        """Still exactly one link (another pickup may have taken and removed it)."""
        return os.fstat(self.fd).st_nlink == 1

    def read_request(self):
        """The submitter's request; leaves the file on the first byte of the message."""
        if self.file.readline(64) != MAGIC:
            raise DropError(f"{self.name}: not a drop file")
        line = self.file.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("recipients"), list):
                raise ValueError("no recipient list")
        except ValueError as exc:
            raise DropError(f"{self.name}: bad request line ({exc})") from None
        return request

    def remove(self):
        os.unlink(self.path)

    def close(self):
        self.file.close()
