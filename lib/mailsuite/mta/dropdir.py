"""The maildrop: how an unprivileged `sendmail` hands mail to the MTA.

The directory is 1733 root (anyone may create a file, nobody may list or
touch another's), so the owner uid of a drop file is who sent it: that is
the authentication, as with Postfix's maildrop.  `sendmail` writes
.ID.tmp under an flock, fsyncs it and renames it to ID only when complete,
so the pickup never sees half a message, and it exits 0 only once that
rename is durable (it may not open the directory to fsync it, so it syncs
the file system).  A .ID.tmp whose lock is free belongs to a sendmail that
died before it said 0: the pickup removes it (`stale_tmp`).

The pickup trusts nothing inside a file except what it checks: it must be
a regular file with one link, the sender identity comes from the file's
owner, and the request line is validated field by field (`check_request`):
a file that fails goes to the corrupt directory, never into the queue.

A drop file is a version line, one JSON line with the submitter's request
(sender from -f, recipients, -F, login, DSN options) and the message (LF).
"""

import errno
import fcntl
import json
import os
import stat
import time

from ..core import fileio
from .queueid import new_id, valid_id

MAGIC = b"mailsuite-drop 1\n"
MAX_REQUEST = 1 << 20
MAX_RECIPIENTS = 10000
MAX_ADDRESS = 512
STALE_TMP_AGE = 60             # seconds: a free .ID.tmp younger than this may be one being created
REQUEST_FIELDS = {"sender", "recipients", "full_name", "login", "dsn"}
DSN_FIELDS = {"ret", "envid", "notify"}
NOTIFY_WORDS = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


class DropError(Exception):
    """A drop file that is not acceptable (wrong type, links, garbage)."""


class DropWriter:
    """A new drop file being written by sendmail; `commit()` makes it visible."""

    def __init__(self, directory, request, qid=None):
        """QID, when given, is tried first (an SMTP session named it in its Received: line)."""
        self.directory = directory
        self.id = None
        for _attempt in range(10):
            qid = qid or new_id()
            self.tmp = os.path.join(directory, f".{qid}.tmp")
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                break
            except FileExistsError:
                qid = None
        else:
            raise OSError(errno.EEXIST, "cannot create a unique drop file", directory)
        self.id = qid
        fcntl.flock(fd, fcntl.LOCK_EX)          # held until the rename is durable: see stale_tmp()
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
        taken already gets a new id.  The rename is made durable before
        this returns: by an fsync of the directory, or, for a user who may
        not open the 1733 maildrop, by syncing its file system."""
        self.file.flush()
        os.fsync(self.file.fileno())
        while True:
            final = os.path.join(self.directory, self.id)
            if not os.path.lexists(final):
                try:
                    os.rename(self.tmp, final)
                    break
                except PermissionError:
                    pass
            self.id = new_id()
        try:
            try:
                fileio.fsync_dir(self.directory)
            except PermissionError:
                fileio.syncfs(self.file.fileno())
        except BaseException:
            fileio.unlink_quietly(final)        # still locked: no pickup has it; never half-promised
            raise
        self.file.close()
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
            raise DropError(f"maildrop/{name}: not a drop file name")
        self.name = name
        self.path = os.path.join(directory, name)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        self.file = open(self.fd, "rb", buffering=1 << 16)
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            self.close()
            raise DropError(f"maildrop/{name}: uid {st.st_uid}: not a regular file")
        self.stat = st
        self.owner = st.st_uid
        self.origin = f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"

    def linked(self):
        """Still exactly one link (another pickup may have taken and removed it)."""
        return os.fstat(self.fd).st_nlink == 1

    def read_request(self):
        """The submitter's request, checked; leaves the file on the first byte of the message."""
        where = f"maildrop/{self.name}: uid {self.owner}"
        if self.file.readline(64) != MAGIC:
            raise DropError(f"{where}: not a drop file")
        line = self.file.readline(MAX_REQUEST + 1)
        if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
            raise DropError(f"{where}: request line too long or unterminated")
        try:
            return check_request(json.loads(line))
        except (ValueError, RecursionError) as exc:
            raise DropError(f"{where}: bad request line ({exc})") from None

    def remove(self):
        os.unlink(self.path)

    def close(self):
        self.file.close()


def check_request(request):
    """REQUEST if every field has the type and size `sendmail` writes; ValueError otherwise."""
    if not isinstance(request, dict):
        raise ValueError("not an object")
    unknown = set(request) - REQUEST_FIELDS
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0][:40]!r}")
    recipients = request.get("recipients")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"recipients: a list of 1 to {MAX_RECIPIENTS} addresses")
    for rcpt in recipients:
        _text(rcpt, "recipient", MAX_ADDRESS)
    _text(request.get("sender"), "sender", MAX_ADDRESS, optional=True)
    _text(request.get("full_name"), "full_name", 256, optional=True, printable=True)
    _text(request.get("login"), "login", 64, optional=True, printable=True)
    dsn = request.get("dsn") or {}
    if not isinstance(dsn, dict) or set(dsn) - DSN_FIELDS:
        raise ValueError("dsn: an object with ret, envid, notify")
    if dsn.get("ret") is not None and dsn["ret"] not in ("HDRS", "FULL"):
        raise ValueError("dsn.ret: HDRS or FULL")
    _text(dsn.get("envid"), "dsn.envid", 100, optional=True, printable=True)
    notify = dsn.get("notify") or {}
    if not isinstance(notify, dict) or set(notify) - {"*"}:
        raise ValueError("dsn.notify: an object with the key *")
    if "*" in notify:
        words = _text(notify["*"], "dsn.notify", 100).split(",")
        if not set(words) <= NOTIFY_WORDS:
            raise ValueError("dsn.notify: NEVER, or SUCCESS,FAILURE,DELAY")
    return request


def _text(value, what, limit, *, optional=False, printable=False):
    if value is None and optional:
        return value
    if not isinstance(value, str) or len(value) > limit or (printable and not value.isprintable()):
        raise ValueError(f"{what}: a{' printable' if printable else ''} string of at most {limit} characters")
    return value


def stale_tmp(directory, name, *, now=None):
    """Remove NAME (.ID.tmp) when its writer is gone: True if it was removed.

    A sendmail holds the flock of its .ID.tmp until the rename is durable,
    so a free lock means it died before it could exit 0: nobody was told
    the message was accepted, and it is not ours to deliver."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and (now or time.time()) - st.st_mtime < STALE_TMP_AGE:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def tmp_name(name):
    """Whether NAME is a drop file being written (.ID.tmp)."""
    return name.startswith(".") and name.endswith(".tmp") and valid_id(name[1:-4])
