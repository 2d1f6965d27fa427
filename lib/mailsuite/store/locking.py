"""Mailbox locking that interoperates with mutt, procmail, Postfix and Dovecot.

Debian Policy 11.6 order: an fcntl() write lock on the mailbox first, then
the dotlock `MAILBOX.lock`.  Both are tried without blocking, and a process
that gets the first but not the second lets go of the first before it
waits again, so a program that takes them in the other order can never
deadlock with us.

The dotlock is created the NFS-safe way (a unique temporary file, link(),
then a stat of the temporary file must show two links) and holds
`PID@HOSTNAME`.  Staleness is judged as liblockfile judges it, with the
host taken into account: a lock of this host whose process is gone, or
that was made before this host last booted (its PID may since belong to
someone else), is stale; a lock of another host, or without a PID, is stale
once it is older than STALE_AFTER seconds by the file system's own clock
(holders touch it during long rewrites).  Where the spool directory does not
let us create files (Debian's 2775 root:mail /var/mail, an unprivileged
user), a session holding the mail group in reserve enables it around the
dotlock's creation and removal in the spool directory only (`mailgroup`),
and anyone else has liblockfile's setgid `dotlockfile` helper make it.

A full disk (ENOSPC, EDQUOT) leaves no room for a dotlock: the fcntl lock
is then the only one taken (every program that shares the spool takes it
too), so mail can still be read and flags changed in place; anything that
needs new space fails on its own with a temporary error.

Readers take only a shared fcntl lock (`read_lock`), as Dovecot does by
default: no dotlock, so reading needs no disk space and readers never
wait for one another, while every writer's fcntl lock keeps them out.

Waiting for the fcntl lock is done in the kernel (F_SETLKW), with a timer
signal for the deadline, as Dovecot waits: a blocked waiter is woken the
moment the holder lets go, and meanwhile uses no CPU.  Fifty sessions
that polled instead (sleeping a little longer each time) took the cores
the holder needed to finish, and one of them could keep missing the lock
for seconds.  Only the main thread can take a signal, so another thread
polls; the dotlock is always polled (it is a file, nothing to wait on).
"""

import errno
import fcntl
import os
import signal
import threading
import time
from contextlib import contextmanager, nullcontext

from ..core import fileio
from . import mailgroup

STALE_AFTER = 300          # seconds, as liblockfile and procmail
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# A delivery holds the locks for a few milliseconds (one fsync), so waiters
# poll briefly, with jitter so that several of them do not wake in step, and
# never sleep long: with many sessions on one mailbox a waiter that slept
# 50 ms at a time kept losing the lock to newcomers for seconds.
_FIRST_BACKOFF = 0.0005
_MAX_BACKOFF = 0.01


class LockTimeout(Exception):
    """The mailbox stayed locked by someone else for longer than we wait."""


class _Expired(Exception):
    """The deadline's timer fired while we waited for an fcntl lock."""


_waiting = False                 # the timer's handler interrupts only a wait in progress


def _expire(signum, frame):
    if _waiting:
        raise _Expired()


def _lock_fd(fd, how, deadline):
    """Take fcntl lock HOW (LOCK_EX or LOCK_SH) on FD by DEADLINE; False if someone else holds it then.

    In the main thread the wait is in the kernel, ended by a timer signal
    at the deadline; elsewhere this is one attempt, and the caller polls.
    """
    global _waiting
    try:
        fcntl.lockf(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
    remaining = deadline - time.monotonic()
    if remaining <= 0 or threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.signal(signal.SIGALRM, _expire)
    try:
        _waiting = True
        signal.setitimer(signal.ITIMER_REAL, remaining)
        fcntl.lockf(fd, how)
        _waiting = False
        return True
    except _Expired:                     # also if the timer fired just as the lock was granted: let it go
        _waiting = False
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    except OSError as exc:
        if exc.errno != errno.EDEADLK:   # a program that waits for our lock while holding one we wait for
            raise
        return False
    finally:
        _waiting = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Dotlock:
    """One `PATH.lock` file; `acquire()` tries once and says whether it won."""

    def __init__(self, path, helper=None, in_spool=False):
        self.path = path + ".lock"
        self.helper = helper
        self.in_spool = in_spool
        self.held = False
        self.via_helper = False
        self.no_space = False       # the disk is full: no dotlock was made, the fcntl lock stands alone

    def _group(self):
        """The reserved mail group for a lock in the spool directory (see mailgroup); nothing elsewhere."""
        return mailgroup.enabled() if self.in_spool else nullcontext()

    def acquire(self):
        try:
            try:
                with self._group():
                    won = self._link_create()
            except PermissionError:
                if not (self.helper and os.access(self.helper, os.X_OK)):
                    raise
                won = self._helper_create()
                self.via_helper = won
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            won = self.no_space = True
        self.held = won
        return won

    def _link_create(self):
        directory, name = os.path.split(self.path)
        unique = os.path.join(directory or ".", f".{name}.{os.uname().nodename}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(unique, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                fileio.pwrite_all(fd, f"{os.getpid()}@{os.uname().nodename}\n".encode(), 0)
            finally:
                os.close(fd)
            try:
                os.link(unique, self.path)
            except FileExistsError:
                pass
            # link() over NFS may succeed without saying so, or fail after succeeding: the link count decides.
            mine = os.stat(unique)
            won = mine.st_nlink == 2
        finally:
            fileio.unlink_quietly(unique)
        if not won:
            self._remove_if_stale(now=mine.st_mtime)
        return won

    def _helper_create(self):
        import subprocess
        done = subprocess.run([self.helper, "-p", "-r", "0", self.path],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done.returncode in (2, 3) and _disk_full(os.path.dirname(self.path)):
            raise OSError(errno.ENOSPC, "no space left for a dotlock")      # L_TMPLOCK, L_TMPWRITE
        return done.returncode == 0

    def _remove_if_stale(self, now):
        """Remove the lock if nobody can be holding it; NOW is the file system's clock."""
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                content = f.read(256)
        except OSError:
            return
        if is_stale(content, st.st_mtime, now):
            fileio.unlink_quietly(self.path)

    def touch(self):
        """Keep a long-held lock fresh, so nobody takes it for stale."""
        if self.held and not self.no_space:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self):
        if not self.held:
            return
        self.held = False
        if self.no_space:
            self.no_space = False
            return
        if self.via_helper:
            import subprocess
            subprocess.run([self.helper, "-u", self.path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with self._group():
                fileio.unlink_quietly(self.path)


def is_stale(content, mtime, now, hostname=None):
    """Whether a dotlock holding CONTENT, last touched at MTIME, has no live holder (file system time NOW)."""
    pid, host = parse_holder(content)
    if pid is not None and host in (None, hostname or os.uname().nodename):
        return not pid_alive(pid) or mtime < _boot_time()
    return now - mtime > STALE_AFTER


def parse_holder(content):
    """(pid, host) from `PID`, `PID@HOST` (ours) or `PID:HOST` (Dovecot's); None where missing."""
    text = content.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    pid, sep, host = text.replace(":", "@", 1).partition("@")
    if not pid.isdigit() or int(pid) <= 0:
        return None, None
    return int(pid), (host if sep else None)


def _disk_full(directory):
    try:
        st = os.statvfs(directory or ".")
    except OSError:
        return False
    return st.f_bavail == 0 or st.f_favail == 0


def _boot_time():
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pid_alive(pid):
    """Whether process PID exists on this host (one we may not signal exists too)."""
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
            if self._try_both(deadline):
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{self.path}: still locked after {self.timeout:g}s")
            time.sleep(backoff * (0.5 + time.monotonic_ns() % 1000 / 1000))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _try_both(self, deadline):
        """fcntl (waited for until DEADLINE), then the dotlock (tried once); both or neither."""
        if not _lock_fd(self.fd, fcntl.LOCK_EX, deadline):
            return False
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
def read_lock(path, fd, cfg, *, timeout=None):
    """A shared fcntl lock on the open mailbox `fd`, for reading; LockTimeout if a writer keeps it."""
    timeout = cfg.mailsuite.lock_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    backoff = _FIRST_BACKOFF
    while True:
        if _lock_fd(fd, fcntl.LOCK_SH, deadline):
            break
        if time.monotonic() >= deadline:
            raise LockTimeout(f"{path}: still locked after {timeout:g}s")
        time.sleep(backoff * (0.5 + time.monotonic_ns() % 1000 / 1000))
        backoff = min(backoff * 2, _MAX_BACKOFF)
    try:
        yield
    finally:
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
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
