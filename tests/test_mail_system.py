"""System mode (not the sandbox): a user's mail never reads a spool its permissions do not open."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO, program
from mail_harness import message

NOBODY = 65534


@pytest.fixture
def system_host():
    """A system-mode configuration with its own spool directory, readable by everyone to traverse."""
    root = tempfile.mkdtemp(prefix="mailsys.")
    os.chmod(root, 0o755)
    spool = os.path.join(root, "spool")
    os.mkdir(spool, 0o1777)
    os.chmod(spool, 0o1777)
    conf = os.path.join(root, "mailsuite.conf")
    with open(conf, "w") as f:
        f.write(f"[mailsuite]\nhostname = localhost\nspool_dir = {spool}\nstate_dir = {root}\n"
                f"log_socket =\nindex_dir =\n[mail]\nrc_file =\nsendmail = /bin/false\n")
    os.chmod(conf, 0o644)
    yield root, conf, spool
    shutil.rmtree(root)


def runnable_by_nobody(candidates, env):
    """The first way of running mail that works for nobody (the venv may live under /root)."""
    for argv in candidates:
        try:
            probe = subprocess.run([*argv, "--help"], env=env, capture_output=True, preexec_fn=as_nobody, cwd="/")
        except (PermissionError, FileNotFoundError):
            continue
        if probe.returncode == 0:
            return argv
    pytest.skip("no Python that nobody may run reaches mailsuite here")


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.mark.root
def test_another_users_spool_stays_closed(system_host):
    root, conf, spool = system_host
    victim = os.path.join(spool, "root")
    with open(victim, "wb") as f:
        f.write(b"From x@y Tue Nov 24 07:00:00 2026\n" + message("private") + b"\n")
    os.chmod(victim, 0o600)
    env = dict(os.environ, HOME="/nonexistent", MAILSUITE_CONFIG=conf, PYTHONPATH=str(REPO / "lib"))
    mail = [program("mail")]
    mail = runnable_by_nobody([mail, [sys.executable, str(REPO / "bin" / "mail")],
                               ["/usr/bin/python3", str(REPO / "bin" / "mail")]], env)
    done = subprocess.run([*mail, "-C", conf, "-u", "root", "-H"], env=env, capture_output=True,
                          preexec_fn=as_nobody, cwd="/")
    assert done.returncode == os.EX_NOINPUT, done
    assert b"Permission denied" in done.stderr
    assert b"private" not in done.stdout
    # root itself reads it.
    done = subprocess.run([*mail, "-C", conf, "-u", "root", "-H"], env=env, capture_output=True)
    assert done.returncode == 0 and b"private" in done.stdout
