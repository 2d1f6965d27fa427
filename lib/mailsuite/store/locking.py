"""Mailbox locking that interoperates with mutt, procmail, Postfix and Dovecot.

Debian Policy 11.6 order: an fcntl() write lock on the mailbox first, then
the dotlock `MAILBOX.lock`.  Both are tried without blocking, and a process
that gets the first but not the second lets go of the first before it
waits again, so a program that takes them in the other order can never
deadlock with us.

The dotlock is created the NFS-safe way (a unique temporary file, link(),
then a stat of the temporary file must show two links) and holds our PID.
A dotlock whose PID is dead, or that is older than STALE_AFTER seconds and
names no PID, is stale and removed.  Where the spool directory does not
let us create files (Debian's 2775 root:mail /var/mail, an unprivileged
user), a session holding the mail group in reserve enables it around the
dotlock's creation and removal in the spool directory only (`mailgroup`),
and anyone else has liblockfile's setgid `dotlockfile` helper make it.
"""

import errno
import fcntl
import os
import time
from contextlib import contextmanager, nullcontext

from ..core import fileio
from . import mailgroup

STALE_AFTER = 300          # seconds, as liblockfile and procmail
# A delivery holds the locks for a few milliseconds (one fsync), so waiters
# poll briefly, with jitter so that several of them do not wake in step.
_FIRST_BACKOFF = 0.002
_MAX_BACKOFF = 0.05


class LockTimeout(Exception):
    """The mailbox stayed locked by someone else for longer than we wait."""


class Dotlock:
    """One `PATH.lock` file; `acquire()` tries once and says whether it won."""

    def __init__(self, path, helper=None, in_spool=False):
        self.path = path + ".lock"
        self.helper = helper
        self.in_spool = in_spool
        self.held = False
        self.via_helper = False

    def _group(self):
        """The reserved mail group for a lock in the spool directory (see mailgroup); nothing elsewhere."""
        return mailgroup.enabled() if self.in_spool else nullcontext()

    def acquire(self):
        try:
            with self._group():
                won = self._link_create()
        except PermissionError:
            if not (self.helper and os.access(self.helper, os.X_OK)):
                raise
            won = self._helper_create()
            self.via_helper = won
        self.held = won
        return won

    def _link_create(self):
        directory, name = os.path.split(self.path)
        unique = os.path.join(directory or ".", f".{name}.{os.uname().nodename}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(unique, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            try:
                os.link(unique, self.path)
            except FileExistsError:
                pass
            # link() over NFS may succeed without saying so, or fail after succeeding: the link count decides.
            won = os.stat(unique).st_nlink == 2
        finally:
            fileio.unlink_quietly(unique)
        if not won:
            self._remove_if_stale()
        return won

    def _helper_create(self):
        import subprocess
        done = subprocess.run([self.helper, "-p", "-r", "0", self.path],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return done.returncode == 0

    def _remove_if_stale(self):
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                content = f.read(64)
        except FileNotFoundError:
            return
        except OSError:
            return
        pid = _parse_pid(content)
        if pid is not None:
            stale = not _pid_alive(pid)
        else:
            stale = time.time() - st.st_mtime > STALE_AFTER
        if stale:
            fileio.unlink_quietly(self.path)

    def touch(self):
        """Keep a long-held lock fresh, so nobody takes it for stale."""
        if self.held:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self):
        if not self.held:
            return
        self.held = False
        if self.via_helper:
            import subprocess
            subprocess.run([self.helper, "-u", self.path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with self._group():
                fileio.unlink_quietly(self.path)


def _parse_pid(content):
    text = content.strip()
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True




class MailboxLock:
    """Both locks on one mailbox, taken in Debian's order; `touch()` during long work."""

    def __init__(self, path, fd, *, timeout, helper=None, dotlock=True, in_spool=False):
        self.path = path
        self.fd = fd
        self.timeout = timeout
        self.dotlock = Dotlock(path, helper, in_spool) if dotlock else None

    def acquire(self):
        deadline = time.monotonic() + self.timeout
        backoff = _FIRST_BACKOFF
        while True:
            if self._try_both():
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{self.path}: still locked after {self.timeout:g}s")
            time.sleep(backoff * (0.5 + time.monotonic_ns() % 1000 / 1000))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _try_both(self):
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        if self.dotlock is None:
            return True
        try:
            if self.dotlock.acquire():
                return True
        except BaseException:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
            raise
        fcntl.lockf(self.fd, fcntl.LOCK_UN)
        return False

    def touch(self):
        if self.dotlock:
            self.dotlock.touch()

    def release(self):
        if self.dotlock:
            self.dotlock.release()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass


@contextmanager
def mailbox_lock(path, fd, cfg, *, timeout=None, dotlock=True):
    """Hold fcntl + dotlock on the open mailbox `fd` at `path`; LockTimeout if we can't."""
    in_spool = os.path.dirname(os.path.normpath(path)) == os.path.normpath(cfg.mailsuite.spool_dir)
    lock = MailboxLock(path, fd, timeout=cfg.mailsuite.lock_timeout if timeout is None else timeout,
                       helper=cfg.mailsuite.dotlock_helper, dotlock=dotlock, in_spool=in_spool)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
