"""Locks that other mail programs honour, and that we honour in turn."""

import os
import subprocess
import sys
import time

import peers
import pytest
from conftest import need, program

from mailsuite.store.locking import STALE_AFTER, Dotlock

MESSAGE = b"Subject: locked\n\nbody\n"


def short_timeout(sandbox, seconds="2s"):
    conf = sandbox.dir / "mailsuite.conf"
    conf.write_text(conf.read_text().replace("lock_timeout = 30s", f"lock_timeout = {seconds}"))


def wait_for(predicate, limit=30):
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_dotlockfile_holder_makes_us_wait_then_give_up(sandbox):
    helper = need("dotlockfile")
    short_timeout(sandbox)
    spool = str(sandbox.spool("alice"))
    subprocess.run([helper, "-l", "-r", "0", spool + ".lock"], check=True)
    done = sandbox.run("mail.local", "alice", input=MESSAGE)
    assert done.returncode == os.EX_TEMPFAIL
    assert sandbox.spool("alice").read_bytes() == b""
    subprocess.run([helper, "-u", spool + ".lock"], check=True)
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == 0


def test_fcntl_holder_makes_us_wait(sandbox):
    short_timeout(sandbox, "60s")
    spool = str(sandbox.spool("alice"))
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys
fd = os.open({spool!r}, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        delivery = subprocess.Popen([program("mail.local"), "-C", sandbox.conf, "alice"], stdin=subprocess.PIPE)
        delivery.stdin.write(MESSAGE)
        delivery.stdin.close()
        time.sleep(0.5)
        assert delivery.poll() is None and sandbox.spool("alice").read_bytes() == b""
        assert not os.path.exists(spool + ".lock")      # we let go of the dotlock while waiting for fcntl
    finally:
        holder.stdin.close()
        holder.wait()
    assert delivery.wait(timeout=60) == 0
    assert b"Subject: locked" in sandbox.spool("alice").read_bytes()


def test_procmail_waits_for_our_lock(sandbox, tmp_path):
    procmail = need("procmail")
    from mailsuite.lda.deliver import open_spool
    spool = sandbox.spool("alice")
    rc = tmp_path / "procmailrc"
    rc.write_text(f"LOGFILE={tmp_path}/procmail.log\n:0:\n{spool}\n")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        proc = subprocess.Popen([procmail, "-m", str(rc)], stdin=subprocess.PIPE)
        proc.stdin.write(b"From p@example.org Mon Jan  1 00:00:00 2024\nFrom: p@example.org\nSubject: from procmail\n\nhi\n")
        proc.stdin.close()
        time.sleep(1.0)
        assert proc.poll() is None and spool.read_bytes() == b""
    assert proc.wait(timeout=60) == 0
    assert b"Subject: from procmail" in spool.read_bytes()


def test_stale_dotlock_of_a_dead_process_is_broken(sandbox):
    spool = str(sandbox.spool("alice"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(spool + ".lock", "w") as f:
        f.write(f"{dead.pid}\n")
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == 0
    assert not os.path.exists(spool + ".lock")


def test_old_dotlock_without_pid_is_stale(sandbox):
    spool = str(sandbox.spool("alice"))
    with open(spool + ".lock", "w"):
        pass
    old = time.time() - STALE_AFTER - 10
    os.utime(spool + ".lock", (old, old))
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == 0


def test_fresh_dotlock_without_pid_is_respected(sandbox):
    short_timeout(sandbox, "1s")
    spool = str(sandbox.spool("alice"))
    with open(spool + ".lock", "w"):
        pass
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == os.EX_TEMPFAIL


def test_dotlock_is_nfs_safe_and_names_our_pid(tmp_path):
    path = str(tmp_path / "box")
    lock = Dotlock(path)
    assert lock.acquire()
    assert open(path + ".lock").read() == f"{os.getpid()}@{os.uname().nodename}\n"
    assert not Dotlock(path).acquire()
    assert sorted(os.listdir(tmp_path)) == ["box.lock"]          # no temporary files left behind
    lock.release()
    assert not os.path.exists(path + ".lock")


@pytest.mark.root
def test_unprivileged_user_uses_the_setgid_helper(world_readable_dir):
    """Debian's 2775 root:mail spool: a user who cannot create USER.lock goes through dotlockfile."""
    import grp
    import pwd
    need("dotlockfile")
    python = peers.require("system-python")
    nobody = pwd.getpwnam("nobody")
    mail_gid = grp.getgrnam("mail").gr_gid
    top = world_readable_dir
    spool_dir = os.path.join(top, "spool")
    os.mkdir(spool_dir)
    os.chown(spool_dir, 0, mail_gid)
    os.chmod(spool_dir, 0o2775)
    box = os.path.join(spool_dir, "nobody")
    open(box, "wb").close()
    os.chown(box, nobody.pw_uid, mail_gid)
    conf = os.path.join(top, "mailsuite.conf")
    with open(conf, "w") as f:
        f.write(f"[mailsuite]\nspool_dir = {spool_dir}\n")
    script = f"""
import os
from mailsuite.core import config
from mailsuite.store.locking import mailbox_lock
cfg = config.load({conf!r})
fd = os.open({box!r}, os.O_RDWR)
with mailbox_lock({box!r}, fd, cfg, timeout=5) as lock:
    print(os.path.exists({box + '.lock'!r}), lock.dotlock.via_helper, flush=True)
print(os.path.exists({box + '.lock'!r}))
"""
    done = subprocess.run([python, "-c", script], capture_output=True, user=nobody.pw_uid, group=nobody.pw_gid,
                          extra_groups=[], cwd=top, env={"PYTHONPATH": os.path.join(top, "lib")})
    assert done.stdout.split() == [b"True", b"True", b"False"], done.stderr


def test_a_lock_of_another_host_is_judged_by_its_age(sandbox):
    """Its PID means nothing here: a fresh one is respected even if no such process runs on this host."""
    short_timeout(sandbox, "1s")
    lock = str(sandbox.spool("alice")) + ".lock"
    with open(lock, "w") as f:
        f.write(f"{dead_pid()}@another-host.example\n")
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == os.EX_TEMPFAIL
    old = time.time() - STALE_AFTER - 10
    os.utime(lock, (old, old))
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == 0


@pytest.mark.parametrize("holder", ["{pid}", "{pid}@{host}", "{pid}:{host}"])   # liblockfile's, ours, Dovecot's
def test_a_lock_of_this_host_from_before_the_last_boot_is_stale(sandbox, holder):
    """Its PID may belong to someone else now (here: to this very process)."""
    short_timeout(sandbox, "1s")
    lock = str(sandbox.spool("alice")) + ".lock"
    with open(lock, "w") as f:
        f.write(holder.format(pid=os.getpid(), host=os.uname().nodename) + "\n")
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == os.EX_TEMPFAIL
    before_boot = boot_time() - 60
    os.utime(lock, (before_boot, before_boot))
    assert sandbox.run("mail.local", "alice", input=MESSAGE).returncode == 0
    assert not os.path.exists(lock)


def test_dotlockfile_respects_our_lock(tmp_path):
    """liblockfile reads the PID in front of @host, as it always read a PID."""
    helper = need("dotlockfile")
    path = str(tmp_path / "box")
    lock = Dotlock(path)
    assert lock.acquire()
    assert subprocess.run([helper, "-l", "-p", "-r", "0", path + ".lock"]).returncode != 0
    lock.release()
    assert subprocess.run([helper, "-l", "-p", "-r", "0", path + ".lock"]).returncode == 0
    subprocess.run([helper, "-u", path + ".lock"], check=True)


def boot_time():
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("btime "))


def dead_pid():
    """A PID no process has (a child that has been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _fcntl_holder(path):
    """A process holding an fcntl write lock on PATH until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys
fd = os.open({str(path)!r}, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"locked\n"
    return holder


def test_a_wait_in_the_kernel_ends_at_the_deadline_and_leaves_no_timer(sandbox):
    """The fcntl wait sleeps in the kernel until a timer signal; it ends with LockTimeout, its handler gone."""
    import signal
    import threading

    from mailsuite.store.locking import LockTimeout, mailbox_lock, read_lock
    path = sandbox.spool("alice")
    before = signal.getsignal(signal.SIGALRM)
    holder = _fcntl_holder(path)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(LockTimeout):
            with mailbox_lock(str(path), fd, sandbox.cfg, timeout=0.3):
                pass
        with pytest.raises(LockTimeout):
            with read_lock(str(path), fd, sandbox.cfg, timeout=0.3):
                pass
        assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        outcome = []

        def elsewhere():                                # not the main thread: it polls instead
            try:
                with read_lock(str(path), fd, sandbox.cfg, timeout=0.3):
                    outcome.append("locked")
            except LockTimeout:
                outcome.append("timeout")
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(30)
        assert outcome == ["timeout"]
    finally:
        holder.stdin.close()
        holder.wait()
    with mailbox_lock(str(path), fd, sandbox.cfg, timeout=5):
        assert os.path.exists(str(path) + ".lock")
    os.close(fd)

