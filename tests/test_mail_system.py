"""System mode (not the sandbox): a user's mail never reads a spool its permissions do not open."""

import os
import shutil
import subprocess
import tempfile

import pytest
from mail_harness import message
from stage import stage

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
    env = dict(os.environ, HOME="/nonexistent", MAILSUITE_CONFIG=conf)
    mail = [stage().program("mail")]
    done = subprocess.run([*mail, "-C", conf, "-u", "root", "-H"], env=env, capture_output=True,
                          preexec_fn=as_nobody, cwd="/")
    assert done.returncode == os.EX_NOINPUT, done
    assert b"Permission denied" in done.stderr
    assert b"private" not in done.stdout
    # root itself reads it.
    done = subprocess.run([*mail, "-C", conf, "-u", "root", "-H"], env=env, capture_output=True)
    assert done.returncode == 0 and b"private" in done.stdout


@pytest.mark.root
def test_root_reading_a_users_spool_writes_nothing_through_the_users_links(real_users, installation_factory):
    """Issue 10, item 16: ~/.cache/mailsuite -> a root-only directory must not get root's index cache."""
    victim = real_users.add("secB")
    system = installation_factory([victim], "mailsuite", mail={"rc_file": "", "sendmail": "/bin/false"})
    rootonly = tempfile.mkdtemp(prefix="mailsuite-rootonly-")          # 0700 root, like /var/lib/rootonly
    try:
        (victim.home / ".cache").mkdir()
        os.chown(victim.home / ".cache", victim.uid, victim.gid)
        link = victim.home / ".cache" / "mailsuite"
        link.symlink_to(rootonly)
        os.lchown(link, victim.uid, victim.gid)
        env = dict(os.environ, HOME="/root")
        for args, commands in ((["-H"], b""), ([], b"p\nx\n")):
            done = subprocess.run(system.command("mail", "-u", victim.name, *args), input=commands, env=env,
                                  capture_output=True, timeout=60, cwd="/")
            assert done.returncode == 0, done.stderr
            assert b"for " + victim.name.encode() in done.stdout
        assert os.listdir(rootonly) == []
    finally:
        shutil.rmtree(rootonly)
