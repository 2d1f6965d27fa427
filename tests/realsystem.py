"""A system-mode installation for real users: PAM, Debian's 2775 root:mail spool, inetd.

The attack tests of the servers log in as users made by `real_users`
(realusers.py), through PAM with the service file we ship (etc/pam.d), so
the servers see exactly what they see on a real host: pwd entries,
pam_unix and its delays, file owners.  The PAM service file is written
under /etc/pam.d with a random name and removed afterwards; the programs
run from the stage (stage.py), because a session drops to the user and
must still be able to read its own code.
"""

import grp
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import peers
import pytest
from stage import stage

REPO = Path(__file__).resolve().parent.parent
PAM_DIR = Path("/etc/pam.d")


@pytest.fixture
def pam_service():
    """The name of a PAM service that is a copy of etc/pam.d/mailsuite; removed when the test ends."""
    peers.require_root("it writes a service file under /etc/pam.d")
    name = f"mailsuite-test-{secrets.token_hex(4)}"
    path = PAM_DIR / name
    shutil.copyfile(REPO / "etc" / "pam.d" / "mailsuite", path)
    try:
        yield name
    finally:
        path.unlink()


def one_message(name):
    return f"From x@example.org Mon Nov 23 10:00:00 2026\nSubject: for {name}\n\nhi\n".encode()


class Installation:
    """A spool directory 2775 root:mail with a 0600 spool per user, and a config using PAM."""

    def __init__(self, users, pam_service, **sections):
        self.top = Path(tempfile.mkdtemp(prefix="mailsuite-real-"))
        self.top.chmod(0o755)
        self.mail_gid = grp.getgrnam("mail").gr_gid
        self.spool = self.top / "spool"
        self.spool.mkdir()
        os.chown(self.spool, 0, self.mail_gid)
        self.spool.chmod(0o2775)
        for user in users:
            box = self.spool / user.name
            box.write_bytes(one_message(user.name))
            os.chown(box, user.uid, self.mail_gid)
            box.chmod(0o600)
        settings = {
            "mailsuite": {"spool_dir": self.spool, "state_dir": self.top / "state", "log_socket": ""},
            "auth": {"pam": "yes", "pam_service": pam_service, "failure_delay": "0"},
            "imap": {"listen": "127.0.0.1:0"},
            "pop3": {"listen": "127.0.0.1:0"},
        }
        for section, keys in sections.items():
            settings.setdefault(section, {}).update(keys)
        self.conf = self.top / "mailsuite.conf"
        self.conf.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                                     for section, keys in settings.items()))
        self.conf.chmod(0o644)

    def command(self, name, *args):
        """argv of one of our programs (from the stage) on this installation."""
        return [stage().program(name), "-C", str(self.conf), *args]

    def remove(self):
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def installation_factory():
    """Installation(users, pam_service, **sections), removed when the test ends."""
    made = []

    def make(users, pam_service, **sections):
        made.append(Installation(users, pam_service, **sections))
        return made[-1]

    yield make
    for each in made:
        each.remove()


class Inetd:
    """openbsd-inetd running one service line on a port of 127.0.0.1, in the foreground (-d)."""

    def __init__(self, argv, directory):
        binary = peers.require("inetd")
        for _ in range(5):
            self.port = _unused_port()
            conf = Path(directory) / "inetd.conf"
            conf.write_text(f"127.0.0.1:{self.port} stream tcp nowait root {argv[0]} "
                            f"{os.path.basename(argv[0])} {' '.join(argv[1:])}\n")
            self.proc = subprocess.Popen([binary, "-d", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
            if self._listening():
                return
            self.stop()
        raise AssertionError("inetd could not bind a port")

    def _listening(self):
        """Whether inetd bound its port (it says so, or exits, on failure)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return True
            except ConnectionRefusedError:
                time.sleep(0.05)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


def _unused_port():
    """A port nobody listens on now (inetd must bind it itself; bind failures are retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_status(pid):
    """/proc/PID/status as {field: [values]}."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields
