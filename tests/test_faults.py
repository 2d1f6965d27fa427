"""Kill the store at every write it makes; the next process must find a whole mailbox.

A child process runs the real code with `fileio.pwrite_all` wrapped to SIGKILL
itself just before its k-th write (k = 1, 2, ...), until a run gets through
unharmed.  After each kill the next process to take the lock must see
either the mailbox before the operation or after it, never a mixture, and
Python's mailbox module must parse it.
"""

import os
import signal
import subprocess
import sys

import pytest

import peers
from conftest import REPO, subjects
from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.prepare import prepare_bytes

CHILD = """
import os, signal, sys
sys.path.insert(0, {lib!r})
from mailsuite.core import config
from mailsuite.core import fileio
from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.prepare import prepare_bytes
from mailsuite.core.users import UserDB
fileio.CHUNK = 512                    # many small writes: many places to die
kill_at = int(sys.argv[1])
real = fileio.pwrite_all
count = 0
def dying_write(fd, data, offset):
    global count
    count += 1
    if count == kill_at:
        real(fd, data[:len(data) // 2], offset)       # half of this write reaches the file
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd, data, offset)
fileio.pwrite_all = dying_write
cfg = config.load({conf!r})
user = UserDB(cfg).lookup("alice")
{action}
"""

APPEND = """
body = b"".join(b"line %d of a long message\\n" % i for i in range(400))
prepared = prepare_bytes(b"Subject: new\\n\\n" + body)
deliver(cfg, user, prepared, sender="s@example.org")
"""

EXPUNGE = """
with open_spool(cfg, user) as box, box.locked():
    box.sync(expunge={2, 5}, flags={3: (frozenset("RF"), tuple("kw%d" % i for i in range(40)))})
"""




def fill(sandbox, count):
    for i in range(1, count + 1):
        prepared = prepare_bytes(b"Subject: m%d\n\n" % i + b"text %d\n" % i * 50)
        deliver(sandbox.cfg, sandbox.user("alice"), prepared, sender="s@example.org")
        prepared.close()
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        box.sync()


def run_child(sandbox, action, kill_at):
    script = CHILD.format(lib=str(REPO / "lib"), conf=sandbox.conf, action=action)
    return subprocess.run([sys.executable, "-c", script, str(kill_at)], capture_output=True, timeout=60)


def recover(sandbox):
    """What the next process sees once it has taken the lock."""
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        return box.scan()


@pytest.mark.parametrize("action, before, after", [
    (APPEND, ["m1", "m2", "m3"], ["m1", "m2", "m3", "new"]),
    (EXPUNGE, [f"m{i}" for i in range(1, 7)], ["m1", "m3", "m4", "m6"]),
])
def test_sigkill_at_every_write(sandbox, action, before, after):
    outcomes = set()
    for kill_at in range(1, 500):
        sandbox.clear_spools()
        fill(sandbox, len(before))
        original = sandbox.spool("alice").read_bytes()
        done = run_child(sandbox, action, kill_at)
        killed = done.returncode == -signal.SIGKILL
        assert killed or done.returncode == 0, done.stderr
        index = recover(sandbox)
        got = subjects(sandbox.spool("alice"))
        assert got in (before, after), (kill_at, got)
        assert len(index.messages) == len(got)
        if got == before and action is APPEND:
            assert sandbox.spool("alice").read_bytes() == original
        outcomes.add(tuple(got))
        if not killed:
            break
    else:
        pytest.fail("the operation never completed")
    assert kill_at > 3                     # it really was killed at several points
    assert tuple(after) in outcomes


@pytest.mark.root
def test_full_filesystem_is_a_temporary_failure(sandbox, tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)]).returncode:
        peers.unavailable("mounting a tmpfs", "mount -t tmpfs failed")
    try:
        conf = sandbox.dir / "mailsuite.conf"
        conf.write_text(conf.read_text().replace(f"spool_dir = {sandbox.dir}/spool", f"spool_dir = {mount_point}"))
        assert sandbox.run("mail.local", "alice", input=b"Subject: small\n\nfits\n").returncode == 0
        before = (mount_point / "alice").read_bytes()
        big = b"Subject: big\n\n" + b"y" * 200_000 + b"\n"
        done = sandbox.run("mail.local", "alice", input=big)
        assert done.returncode == os.EX_TEMPFAIL, done.stderr
        assert (mount_point / "alice").read_bytes() == before
        assert subjects(mount_point / "alice") == ["small"]
    finally:
        subprocess.run(["umount", str(mount_point)])
