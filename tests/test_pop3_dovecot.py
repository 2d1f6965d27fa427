"""Dovecot's pop3 on the same spool reports the same UIDLs and sizes as pop3d, in both orders.

Dovecot's pop3 binary runs pre-authenticated on stdin/stdout (USER and HOME
in the environment, a minimal config); as root it drops to `nobody`, since
Dovecot refuses to serve mail as root.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import peers
import pytest
from conftest import program
from pop3lib import configure, deliver_to, message

DOVECOT_POP3 = "/usr/lib/dovecot/pop3"


def session(argv, commands, env=None, user=None):
    done = subprocess.run(argv, input=b"".join(c + b"\r\n" for c in commands), capture_output=True,
                          timeout=60, env=env, user=user)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def listing(output, command_index):
    """The entries of the multi-line reply to the COMMAND_INDEX-th multi-line command."""
    blocks = output.split("\r\n.\r\n")
    lines = blocks[command_index].split("\r\n")
    entries = [line for line in lines if line[:1].isdigit()]
    return [tuple(entry.split()) for entry in entries]


class Dovecot:
    def __init__(self, directory):
        peers.require("dovecot-pop3")
        self.dir = directory
        self.dir.mkdir()
        self.spool = directory / "alice.mbox"
        self.root = os.geteuid() == 0
        account = pwd.getpwnam("nobody") if self.root else pwd.getpwuid(os.getuid())
        self.uid, self.gid = account.pw_uid, account.pw_gid
        (directory / "mail").mkdir()
        (directory / "dovecot.conf").write_text(
            f"log_path = /dev/stderr\nssl = no\n"
            f"mail_location = mbox:{directory}/mail:INBOX={self.spool}:INDEX=MEMORY\n"
            f"pop3_uidl_format = %08Xu%08Xv\nmbox_write_locks = fcntl\n"
            f"mail_uid = {self.uid}\nmail_gid = {self.gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n")
        if self.root:
            directory.chmod(0o755)
            for path in (directory, directory / "mail", directory / "dovecot.conf"):
                os.chown(path, self.uid, self.gid)

    def take(self, spool):
        shutil.copyfile(spool, self.spool)
        os.chown(self.spool, self.uid, self.gid)
        self.spool.chmod(0o600)

    def give_back(self, spool):
        shutil.copyfile(self.spool, spool)

    def run(self, commands):
        env = {"USER": "alice", "HOME": str(self.dir), "PATH": os.environ.get("PATH", "")}
        return session([DOVECOT_POP3, "-c", str(self.dir / "dovecot.conf")], commands, env=env)


COMMANDS = [b"UIDL", b"LIST", b"TOP 3 2", b"QUIT"]


def ours(sandbox):
    return session([program("pop3d"), "-C", sandbox.conf], [b"USER alice", b"PASS alice", *COMMANDS],
                   env=sandbox.env)


def same_sizes(mine, theirs):
    """Dovecot's LIST leaves dot-stuffing out; ours is what RETR sends: message 2 has one '.' line."""
    stuffed = {"1": 0, "2": 1, "3": 0}
    return [(n, int(size)) for n, size in mine] == [(n, int(size) + stuffed[n]) for n, size in theirs]


@pytest.fixture
def spool(sandbox):
    configure(sandbox, {"auth": {"failure_delay": "0"}})
    deliver_to(sandbox, "alice", message("one"))
    deliver_to(sandbox, "alice", message("two", body=".dot\n>From quoted\n\n\nend\n"))
    deliver_to(sandbox, "alice", message("three", body="a\nb\nc\n" * 50))
    return sandbox


@pytest.fixture
def dovecot():
    """A Dovecot home outside pytest's private (0700) tmp tree, so `nobody` can reach it."""
    directory = tempfile.mkdtemp(prefix="mailsuite-dovecot-")
    os.chmod(directory, 0o755)
    yield Dovecot(Path(directory) / "home")
    shutil.rmtree(directory)


def test_same_uidls_when_pop3d_assigned_them(spool, dovecot):
    mine = ours(spool)
    dovecot.take(spool.spool("alice"))
    theirs = dovecot.run(COMMANDS)
    assert listing(mine, 0) == listing(theirs, 0)          # UIDL
    assert same_sizes(listing(mine, 1), listing(theirs, 1))
    assert len(listing(mine, 0)) == 3


def test_same_uidls_when_dovecot_assigned_them(spool, dovecot):
    dovecot.take(spool.spool("alice"))
    theirs = dovecot.run(COMMANDS)
    dovecot.give_back(spool.spool("alice"))
    mine = ours(spool)
    assert listing(mine, 0) == listing(theirs, 0)
    assert same_sizes(listing(mine, 1), listing(theirs, 1))
