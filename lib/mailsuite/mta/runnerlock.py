"""The runner lock: how a queue runner and the programs around it find each other.

While a runner lives it holds a shared flock on QUEUE/runner.lock; sendmail
tries an exclusive one, and when that fails it knows the mail it just
dropped will be picked up without its help.  `wake()` touches QUEUE/wake,
which the runner watches (as Postfix's qmgr listens on its trigger), so
`sendmail -q` and `mailsuite queue flush` take effect at once, not at the
runner's next timer.  Kept apart from queue.py so that sendmail's hot path
imports almost nothing.
"""

import fcntl
import os


def hold(queue_dir):
    """Announce a runner: the returned fd holds the shared lock until closed."""
    fd = os.open(os.path.join(queue_dir, "runner.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def active(queue_dir):
    """True while some queue runner holds the lock."""
    try:
        fd = os.open(os.path.join(queue_dir, "runner.lock"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


WAKE = "wake"


def wake(queue_dir):
    """Tell a running runner to look at the queue now (an inotify event on QUEUE/wake)."""
    path = os.path.join(queue_dir, WAKE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, b"\n")
    finally:
        os.close(fd)
