"""The runner lock: how a queue runner tells submitters it is there.

While a runner lives it holds a shared flock on QUEUE/runner.lock; sendmail
tries an exclusive one, and when that fails it knows the mail it just
dropped will be picked up without its help.  Kept apart from queue.py so
that sendmail's hot path imports almost nothing.
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
