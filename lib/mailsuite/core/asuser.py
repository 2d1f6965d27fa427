"""Doing one thing with a user's rights: in a child process that became the user.

The delivery worker runs as root, but what a user names (a .forward, the
:include: files it lists, a /file, a |command) must be reached with that
user's rights only, as sendmail and Postfix's local(8) do: a path through
a symlink to a root-only directory, or to another user's file, then fails
exactly as it would for the user at a shell.  `become()` drops a process
for good; `open_as()` forks a child that becomes the user, opens the file
and hands the descriptor back over a socket (SCM_RIGHTS), so the parent
reads it and checks its owner without ever having opened a path itself.
"""

import errno
import os
import socket


def become(run_as):
    """Drop this process to RUN_AS (a routing.RunAs) for good: no groups but its own.

    Only ever called in a child process; None means stay as we are."""
    if run_as is None:
        return
    os.setgroups([])
    os.setresgid(run_as.gid, run_as.gid, run_as.gid)
    os.setresuid(run_as.uid, run_as.uid, run_as.uid)
    if os.getresuid() != (run_as.uid,) * 3 or os.getresgid() != (run_as.gid,) * 3:
        raise PermissionError("could not drop root privileges")


def open_as(run_as, path, flags):
    """PATH opened with FLAGS by a child that became RUN_AS: a file descriptor.

    Raises the child's OSError (EACCES, ENOENT, ELOOP...) as if we had
    opened the path ourselves as that user."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:                                   # the child: never returns
        try:
            ours.close()
            become(run_as)
            fd = os.open(path, flags | os.O_CLOEXEC)
            socket.send_fds(theirs, [b"0"], [fd])
        except OSError as exc:
            theirs.send(str(exc.errno or errno.EIO).encode())
        except BaseException:                      # noqa: BLE001 - report, then _exit
            theirs.send(str(errno.EIO).encode())
        finally:
            os._exit(0)
    theirs.close()
    try:
        message, fds, _flags, _address = socket.recv_fds(ours, 16, 1)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    if fds:
        return fds[0]
    code = int(message) if message.isdigit() else errno.EIO
    raise OSError(code, os.strerror(code), path)
