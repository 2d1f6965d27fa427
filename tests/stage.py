"""A copy of the programs that any user may run, wherever the checkout lives.

Tests that run our programs as another user (Dovecot refuses root, so they
run as `nobody`; the security tests run as users they create) cannot use
the venv inside the checkout: a clone in a 0700 directory (root's home, a
`mktemp -d`) is closed to them.  The stage is a 0755 directory outside the
checkout holding the package, its third-party dependencies and one script
per program, run by an interpreter that user may execute.  It is built
once per test process and removed at exit.
"""

import atexit
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import peers

REPO = Path(__file__).resolve().parent.parent
DEPENDENCIES = ("pyinotify", "daemon", "lockfile", "dns")


class Stage:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mailsuite-stage-"))
        atexit.register(shutil.rmtree, self.dir, True)
        self.dir.chmod(0o755)
        self.lib = self.dir / "lib"
        self.bin = self.dir / "bin"
        shutil.copytree(REPO / "lib" / "mailsuite", self.lib / "mailsuite",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in DEPENDENCIES:
            origin = Path(importlib.util.find_spec(name).origin)
            if origin.name == "__init__.py":
                shutil.copytree(origin.parent, self.lib / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(origin, self.lib / origin.name)
        self.python = self._interpreter()
        self.bin.mkdir()
        for script in (REPO / "bin").iterdir():
            self._install(script.name, script.read_text())
        self._install("mailq", (REPO / "bin" / "sendmail").read_text())
        self._install("newaliases", (REPO / "bin" / "sendmail").read_text())
        subprocess.run(["chmod", "-R", "a+rX", str(self.dir)], check=True)

    def _install(self, name, text):
        body = text.split("\n", 1)[1]
        path = self.bin / name
        path.write_text(f"#!{self.python} -s\nimport sys\nsys.path.insert(0, {str(self.lib)!r})\n{body}")
        path.chmod(0o755)

    def _interpreter(self):
        """This Python if every user may run it, else the system's python3."""
        ours = os.path.realpath(sys._base_executable)
        if _runs_as_nobody(ours):
            return ours
        system = peers.require("system-python")
        if not _runs_as_nobody(system):
            peers.unavailable("a Python that every user may run", f"neither {ours} nor {system}")
        return system

    def program(self, name):
        return str(self.bin / name)


def _runs_as_nobody(python):
    nobody = pwd.getpwnam("nobody")
    try:
        done = subprocess.run([python, "-c", ""], capture_output=True, timeout=30, cwd="/",
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    except OSError:
        return False
    return done.returncode == 0


_stage = None


def stage():
    """The stage of this test process, built at first use."""
    global _stage
    if _stage is None:
        _stage = Stage()
    return _stage
