"""The children a daemon forks per unit of work, and their reaping.

The listeners fork a process per session and the queue runner one per
delivery, so that a crash or a hostile input costs one child only.  Both
need the same two things: a child that runs its work with the daemon's
signal handling undone and always ends in `os._exit` (it never returns
into the parent's loop, and never flushes the parent's buffers twice), and
a parent that collects the children that ended without blocking on the
others.
"""

import os
import signal
import sys

_PARENT_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_child(work, logger, what):
    """In a freshly forked child: run WORK(), then exit 0; never returns.

    When WORK raises, the traceback is logged (as WHAT failed) and the child exits 70 (EX_SOFTWARE)."""
    status = os.EX_SOFTWARE
    try:
        signal.set_wakeup_fd(-1)
        for signum in _PARENT_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        work()
        status = 0
    except BaseException:                       # noqa: BLE001 - report, then _exit
        logger.exception("%s failed", what)
    finally:
        try:
            sys.stdout.flush()
        finally:
            os._exit(status)


def reap(block):
    """[(pid, wait status)] of the children that ended (BLOCK: wait for the next one); None when none are left."""
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return ended or None
        if pid == 0:
            return ended
        ended.append((pid, status))
        if block:
            return ended
