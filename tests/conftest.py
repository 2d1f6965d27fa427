"""Shared fixtures: a fresh sandbox per test, and helpers to run the programs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent          # the venv's bin: the installed programs

sys.path.insert(0, str(REPO / "lib"))


def program(name):
    """Path of an installed mailsuite program."""
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment")
    return str(path)


def need(tool):
    """Skip unless an external program (a real peer) is on PATH or in sbin."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/lib/dovecot")
    if not found:
        pytest.skip(f"{tool} is not installed")
    return found


class Sandbox:
    def __init__(self, directory):
        from mailsuite import config, sandbox
        self.dir = Path(directory)
        self.conf = sandbox.init(str(self.dir))
        self.cfg = config.load(self.conf, required=True)
        self.env = dict(os.environ, MAILSUITE_CONFIG=self.conf)

    def spool(self, user):
        return self.dir / "spool" / user

    def home(self, user):
        return self.dir / "home" / user

    def user(self, name):
        from mailsuite.users import UserDB
        return UserDB(self.cfg).lookup(name)

    def run(self, prog, *args, input=b"", check=False, timeout=60, env=None):
        """Run an installed program with -C pointing at this sandbox."""
        return subprocess.run([program(prog), "-C", self.conf, *args], input=input, capture_output=True,
                              check=check, timeout=timeout, env=env or self.env)

    def deliver(self, user, raw, sender="s@example.org"):
        """Deliver raw message bytes to a user's spool in-process, as mail.local would."""
        from mailsuite.deliver import deliver, prepare_bytes
        prepared = prepare_bytes(raw)
        try:
            deliver(self.cfg, self.user(user), prepared, sender=sender)
        finally:
            prepared.close()

    def clear_spools(self):
        for user in ("alice", "bob"):
            self.spool(user).write_bytes(b"")


def subjects(path):
    """The Subject: of every message in an mbox, as Python's mailbox module reads it."""
    import mailbox
    box = mailbox.mbox(str(path), create=False)
    try:
        return [box.get_message(k)["subject"] for k in box.keys()]
    finally:
        box.close()


@pytest.fixture
def sandbox(tmp_path):
    """A fresh sandbox whose demo users' spools start empty (no welcome message)."""
    box = Sandbox(tmp_path / "sandbox")
    box.clear_spools()
    return box


def pytest_collection_modifyitems(config, items):
    is_root = os.geteuid() == 0
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root"))
