"""Shared fixtures: a fresh sandbox per test, and helpers to run the programs."""

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import peers
import pytest

pytest_plugins = ["realusers", "realsystem", "mta_system"]   # real users; PAM services and installations; a system-mode MTA

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent          # the venv's bin: the installed programs

sys.path.insert(0, str(REPO / "lib"))


def program(name):
    """Path of an installed mailsuite program (`make test` installs them into the venv)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: run the tests with `make test`", pytrace=False)
    return str(path)


def need(tool):
    """The path of a real peer; skips, or fails in CI, naming its package when it is missing."""
    return peers.require(tool)


class Sandbox:
    def __init__(self, directory):
        from mailsuite.admin import sandbox
        from mailsuite.core import config
        self.dir = Path(directory)
        self.conf = sandbox.init(str(self.dir), tls=False)
        self.cfg = config.load(self.conf, required=True)
        self.env = dict(os.environ, MAILSUITE_CONFIG=self.conf)

    def spool(self, user):
        return self.dir / "spool" / user

    def home(self, user):
        return self.dir / "home" / user

    def user(self, name):
        from mailsuite.core.users import UserDB
        return UserDB(self.cfg).lookup(name)

    def run(self, prog, *args, input=b"", check=False, timeout=60, env=None):
        """Run an installed program with -C pointing at this sandbox."""
        return subprocess.run([program(prog), "-C", self.conf, *args], input=input, capture_output=True,
                              check=check, timeout=timeout, env=env or self.env)

    def deliver(self, user, raw, sender="s@example.org"):
        """Deliver raw message bytes to a user's spool in-process, as mail.local would."""
        from mailsuite.lda.deliver import deliver
        from mailsuite.store.prepare import prepare_bytes
        prepared = prepare_bytes(raw)
        try:
            deliver(self.cfg, self.user(user), prepared, sender=sender)
        finally:
            prepared.close()

    def clear_spools(self):
        for user in ("alice", "bob"):
            self.spool(user).write_bytes(b"")


def mbox_messages(path):
    """The messages of an mbox as Python's mailbox module reads them, without the pseudo-message.

    The pseudo-message ("FOLDER INTERNAL DATA", with an X-IMAP: header)
    keeps an emptied folder's UID state; no mail reader shows it.
    """
    import mailbox
    box = mailbox.mbox(str(path), create=False)
    try:
        found = [box.get_message(k) for k in box.keys()]
    finally:
        box.close()
    return [m for m in found if m["x-imap"] is None]


def subjects(path):
    """The Subject: of every message in an mbox, as Python's mailbox module reads it."""
    return [m["subject"] for m in mbox_messages(path)]


@pytest.fixture
def world_readable_dir():
    """A directory with a copy of the package in lib/, which an unprivileged user can reach."""
    import tempfile
    directory = tempfile.mkdtemp(prefix="mailsuite-test-")
    os.chmod(directory, 0o755)
    shutil.copytree(REPO / "lib" / "mailsuite", os.path.join(directory, "lib", "mailsuite"))
    yield directory
    shutil.rmtree(directory)


@pytest.fixture
def sandbox(tmp_path):
    """A fresh sandbox whose demo users' spools start empty (no welcome message)."""
    box = Sandbox(tmp_path / "sandbox")
    box.clear_spools()
    return box


@pytest.fixture
def shared_sandbox():
    """A sandbox Dovecot may use too: in a directory anyone can reach, owned by nobody when we are root.

    Dovecot refuses to serve mail as root, so then both servers (and
    mail.local) run as nobody: see imap_support.RUN_AS.
    """
    from imap_support import shared_sandbox as body
    yield from body()


@pytest.fixture
def lmtp_socket(sandbox, tmp_path):
    """The path of a unix socket whose one connection is served by the sandbox's `mail.local -l`."""
    path = str(tmp_path / "lmtp.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            subprocess.run([program("mail.local"), "-C", sandbox.conf, "-l"], stdin=conn, stdout=conn, timeout=60)

    server = threading.Thread(target=serve)
    server.start()
    yield path
    server.join(timeout=60)
    listener.close()


@pytest.fixture
def mail_sandbox(tmp_path):
    """A sandbox for mail(1) tests whose sendmail records what it is handed (see mail_harness.py)."""
    from mail_harness import MailSandbox
    return MailSandbox(tmp_path / "sandbox")


def pytest_runtest_setup(item):
    """Markers that say what a test needs: `root` and `peers(...)` (see peers.py)."""
    if item.get_closest_marker("root"):
        peers.require_root("it creates users, mounts file systems or changes owners")
    for marker in item.iter_markers("peers"):
        for name in marker.args:
            peers.require(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With MAILSUITE_REQUIRE_PEERS=1 no test may pass by skipping, whatever called pytest.skip."""
    outcome = yield
    report = outcome.get_result()
    if peers.REQUIRED and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under MAILSUITE_REQUIRE_PEERS=1: {reason}"
