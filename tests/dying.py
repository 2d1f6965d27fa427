"""A child process that runs the store's real code and SIGKILLs itself at its k-th change to a file.

Every change the store makes goes through mailsuite.core.fileio (writes,
truncations, renames, unlinks); the child wraps each of them to count, and
at the k-th one kills itself (half of a write reaches the file first).
Shared by the fault tests and the recovery tests with real users.
"""

import pwd
import signal
import subprocess
import sys

import peers

CHILD = """
import os, signal, sys
sys.path.insert(0, {lib!r})
from mailsuite.core import config
from mailsuite.core import fileio
from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.prepare import prepare_bytes
from mailsuite.core.users import UserDB
fileio.CHUNK = 2048                   # many small writes: many places to die
kill_at = int(sys.argv[1])
count = 0
def dying(real, half=False):
    def change(*args, **kwargs):
        global count
        count += 1
        if count == kill_at:
            if half:
                real(args[0], args[1][:len(args[1]) // 2], args[2])      # half of this write reaches the file
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return change
fileio.pwrite_all = dying(fileio.pwrite_all, half=True)
for name in ("truncate", "rename", "unlink"):
    setattr(fileio, name, dying(getattr(fileio, name, None) or getattr(os, "ftruncate" if name == "truncate" else name)))
cfg = config.load({conf!r})
user = UserDB(cfg).lookup({user!r})
def uids():
    with open_spool(cfg, user) as box:
        return [m.uid for m in box.scan().messages]
{action}
"""



def run_dying(lib, conf, action, kill_at, *, user="alice", as_user=None, cwd=None):
    """Run ACTION (Python that may use `cfg` and `user`, the mail user USER) in a child killed at change KILL_AT.

    True if it was killed; it runs as AS_USER when given.
    """
    script = CHILD.format(lib=lib, conf=conf, action=action, user=user)
    prefix = []
    python = sys.executable
    if as_user:
        entry = pwd.getpwnam(as_user)
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]
        python = peers.require("system-python")
    done = subprocess.run(prefix + [python, "-c", script, str(kill_at)], capture_output=True, timeout=60, cwd=cwd)
    killed = done.returncode == -signal.SIGKILL
    assert killed or done.returncode == 0, done.stderr.decode()
    return killed
