"""A system-mode MTA for the attack tests: real users submit, root delivers.

The installation lives in a fresh 0755 directory every user can traverse,
laid out as `make install` lays out the real one: the spool 2775 root:mail,
the maildrop 1733 root, the queue 0700 root, a root-owned aliases file and
a configuration that users may read.  Users run the staged `sendmail`
(stage.py); root runs the checkout's programs (the queue runner, the
daemon), whose log lines go to stderr so a test can read them.
"""

import grp
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import program
from mta_helpers import spool_messages
from procs import LISTENING, descendants
from stage import stage


class SystemMta:
    def __init__(self, **sections):
        self.dir = Path(tempfile.mkdtemp(prefix="mailsuite-mta-"))
        self.dir.chmod(0o755)
        mail_gid = grp.getgrnam("mail").gr_gid
        self.spool_dir = self._directory("spool", 0o2775, gid=mail_gid)
        self.maildrop = self._directory("maildrop", 0o1733)
        self.queue_dir = self._directory("queue", 0o700)
        self.out = self._directory("out", 0o1777)          # where commands run by users may write
        self.aliases = self.dir / "aliases"
        self.aliases.write_text("postmaster: root\n")
        values = {
            "mailsuite": {"hostname": "mta.test", "local_domains": "mta.test localhost",
                          "spool_dir": self.spool_dir, "queue_dir": self.queue_dir,
                          "maildrop_dir": self.maildrop, "state_dir": self.dir / "state",
                          "log_socket": "", "index_dir": "", "lock_timeout": "60s"},
            "queue": {"aliases": self.aliases, "min_backoff": "1s", "max_backoff": "2s",
                      "run_interval": "1s"},
            "smtp": {"listen": "127.0.0.1:0"},
            "submission": {"deliver_now": "no"},
        }
        for section, keys in sections.items():
            values.setdefault(section, {}).update(keys)
        self.conf = self.dir / "mailsuite.conf"
        self.conf.write_text("".join(
            f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
            for section, keys in values.items()))
        self.conf.chmod(0o644)
        self.daemon = None
        self.log_path = self.dir / "daemon.log"

    def _directory(self, name, mode, gid=0):
        path = self.dir / name
        path.mkdir()
        os.chown(path, 0, gid)
        path.chmod(mode)
        return path

    def sendmail(self, user, *args, input=b"Subject: test\n\nhello\n"):
        """The staged sendmail run by real USER (a RealUser)."""
        return user.run([stage().program("sendmail"), "-C", str(self.conf), *args], input=input)

    def run_as(self, user, name, *args, input=b""):
        """Any staged program run by real USER."""
        return user.run([stage().program(name), "-C", str(self.conf), *args], input=input)

    def root(self, name, *args, input=b"", timeout=120):
        """One of our programs run by root, as the MTA runs them."""
        return subprocess.run([program(name), "-C", str(self.conf), *args], input=input,
                              capture_output=True, timeout=timeout)

    def run_queue(self):
        """`sendmail -q` as root: pickup, then one attempt for everything due; its log text."""
        done = self.root("sendmail", "-q")
        assert done.returncode == 0, done.stderr
        return done.stderr.decode(errors="replace")

    def spool(self, user):
        return self.spool_dir / user.name

    def messages(self, user):
        return spool_messages(self.spool(user))

    def spool_bytes(self, user):
        path = self.spool(user)
        return path.read_bytes() if path.exists() else b""

    def queue_entries(self, state):
        directory = self.queue_dir / state
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

    def start_daemon(self, *extra, argv=None):
        """`sendmail -bD` as root (or ARGV); returns its SMTP port.  Its log: `daemon_log()`."""
        self.log_path = self.dir / "daemon.log"
        log = open(self.log_path, "ab")
        self.daemon = subprocess.Popen(argv or [program("sendmail"), "-C", str(self.conf), "-bD", *extra],
                                       stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = LISTENING.search(self.daemon_log())
            if found:
                return int(found.group(1))
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        self.stop_daemon()
        raise AssertionError(f"sendmail -bD did not start: {self.daemon_log()}")

    def daemon_log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop_daemon(self):
        """SIGTERM to the master and to whatever it left behind, by PID."""
        if self.daemon is None:
            return
        family = descendants(self.daemon.pid)
        self.daemon.terminate()
        try:
            self.daemon.wait(30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.daemon = None

    def close(self):
        self.stop_daemon()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def system_mta():
    """A fresh system-mode MTA; `SystemMta(**sections)` builds one with other settings."""
    mta = SystemMta()
    try:
        yield mta
    finally:
        mta.close()
