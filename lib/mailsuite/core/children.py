"""The children a daemon forks per unit of work, and their reaping.

The listeners fork session processes, the SMTP daemon its queue runner
and the runner its delivery workers, so that a crash or a hostile input
costs one child only.  All need the same two things: a child that runs its
work with the daemon's signal handling undone and always ends in
`os._exit` (it never returns into the parent's loop, and never flushes the
parent's buffers twice), and a parent that collects the children that
ended without blocking on the others.

The daemon's signals are blocked across the fork and unblocked in the
child only once its handlers are the defaults again: a SIGTERM sent to a
child that has just been forked (a runner replaced at once by a second
SIGHUP) would otherwise run the parent's handler in the child, which sets
a flag nobody reads, and the child would live on.
"""

import os
import signal
import sys

_PARENT_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def fork_child(work, logger, what):
    """Fork a child that runs WORK() and exits (see _run_child); the child's pid, in the parent.

    OSError when the fork fails."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _PARENT_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _run_child(work, logger, what, mask)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def _run_child(work, logger, what, mask):
    """In a freshly forked child: the default signal handling, MASK as the signal mask, then WORK(), then exit 0.

    Never returns.  When WORK raises, the traceback is logged (as WHAT
    failed) and the child exits 70 (EX_SOFTWARE)."""
    status = os.EX_SOFTWARE
    try:
        signal.set_wakeup_fd(-1)
        for signum in _PARENT_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
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
