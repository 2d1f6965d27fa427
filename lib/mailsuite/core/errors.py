"""Errors that can end a program, each with the sysexits status (sysexits.h) it ends with.

cron, mutt, PHP and the MTA act on a program's exit status, so the status
of an error is decided once, where the error is defined (a damaged queue
file, a bad configuration key), and `cli.run` and every command that
reports errors one by one read it from there.
"""

import errno
import os


class ExitError(Exception):
    """An error a user or operator can cause; `status` is what the program exits with."""

    status = os.EX_SOFTWARE


class Fatal(ExitError):
    """Stop the program: `Fatal(os.EX_NOUSER, "no such user: bob")`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# Failures of the file system that pass by themselves (a full disk, a quota, a
# hiccup of the device or of NFS, no memory or descriptors left): whoever
# meets one says "try again later" (EX_TEMPFAIL, 4xx) rather than "this
# cannot work" (a bounce).
TEMPORARY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.ENOMEM, errno.EMFILE,
                              errno.ENFILE, errno.ESTALE, errno.EINTR})


def is_temporary(exc):
    """Whether OSError EXC may pass by itself (an OSError without errno counts as one)."""
    return exc.errno is None or exc.errno in TEMPORARY_ERRNOS


def os_error_status(exc, permanent):
    """The exit status for OSError EXC: EX_TEMPFAIL when it may pass, else PERMANENT."""
    return os.EX_TEMPFAIL if is_temporary(exc) else permanent
