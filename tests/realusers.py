"""Real Unix users for the attack tests: made with useradd, removed with userdel.

A security test plays one local user against another, so both must be
real accounts the kernel, PAM and the programs see (`getpwnam`, /etc/shadow,
file ownership), not sandbox names mapped to one uid.  Names are random, so
parallel test processes (and parallel checkouts) never collide; every user
is removed, with their home, when the test ends.  The password of each user
is their name.
"""

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import peers
import pytest


@dataclass(frozen=True)
class RealUser:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def password(self):
        return self.name

    def run(self, argv, **kwargs):
        """Run ARGV as this user, with only their own group, in their home."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 60)
        env = kwargs.pop("env", None) or dict(os.environ)
        env.update(HOME=str(self.home), USER=self.name, LOGNAME=self.name)
        return subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[], cwd=self.home, env=env,
                              **kwargs)

    def run_background(self, argv, stdin=subprocess.DEVNULL):
        """Start ARGV as this user (like run()) without waiting: a Popen with pipes; stop it by PID."""
        env = dict(os.environ, HOME=str(self.home), USER=self.name, LOGNAME=self.name)
        return subprocess.Popen(argv, user=self.uid, group=self.gid, extra_groups=[], cwd=self.home, env=env,
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, relative, data, mode=0o644):
        """A file in this user's home, owned by them (as they would have written it)."""
        path = self.home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.chown(path, self.uid, self.gid)
        path.chmod(mode)
        return path


def _retrying(argv, input=None):
    """useradd and friends refuse while another process holds /etc/passwd's lock: wait for it."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(argv, input=input, capture_output=True, text=True)
        if done.returncode == 0 or time.monotonic() > deadline or "lock" not in done.stderr:
            return done
        time.sleep(0.05 + secrets.randbelow(100) / 1000)


class Users:
    """Creates users on demand for one test and removes them all afterwards."""

    def __init__(self):
        peers.require_root("it creates real users with useradd")
        peers.require("useradd")
        self.top = Path(tempfile.mkdtemp(prefix="mailsuite-users-"))
        self.top.chmod(0o755)
        self.created = []

    def add(self, label="u"):
        name = f"ms{label[:6]}{secrets.token_hex(3)}".lower()
        home = self.top / name
        done = _retrying(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                          "--user-group", name])
        if done.returncode != 0:
            raise RuntimeError(f"useradd {name}: {done.stderr.strip()}")
        self.created.append(name)
        done = _retrying(["chpasswd"], input=f"{name}:{name}\n")
        if done.returncode != 0:
            raise RuntimeError(f"chpasswd {name}: {done.stderr.strip()}")
        entry = pwd.getpwnam(name)
        home.chmod(0o755)
        return RealUser(name, entry.pw_uid, entry.pw_gid, home)

    def remove_all(self):
        for name in reversed(self.created):
            _retrying(["userdel", "--force", name])
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def real_users():
    """A factory of real users: `real_users.add("secA")`; all removed when the test ends."""
    users = Users()
    try:
        yield users
    finally:
        users.remove_all()
