"""make install: PREFIX and DESTDIR honoured, and the installed programs run on the system's Python.

A system installation must not depend on the interpreter that happens to
be first in PATH (a pyenv under /root is unusable by other users): the
programs name /usr/bin/python3 and find the package in PREFIX/lib/mailsuite,
with the dependencies Debian packages.  The test installs into a DESTDIR,
then runs the installed programs from where they were meant to live, by
mounting the staged tree over /usr/local in a private mount namespace.
"""

import os
import subprocess
import sys

import peers
import pytest
from conftest import REPO

DEBIAN_DEPENDENCIES = "python3-pyinotify python3-daemon python3-dnspython"


def make_install(stage, prefix="/usr/local", python=None):
    argv = ["make", "-C", str(REPO), "install", f"DESTDIR={stage}", f"PREFIX={prefix}"]
    if python:
        argv.append(f"INSTALL_PYTHON={python}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return stage / prefix.lstrip("/")


@pytest.mark.slow
def test_staged_install(tmp_path):
    usr = make_install(tmp_path / "stage", "/usr", python=sys.executable)
    for program in os.listdir(REPO / "bin") + ["mailq", "newaliases"]:
        assert (usr / "bin" / program).exists(), program
    for page in os.listdir(REPO / "man"):
        section = page.rsplit(".", 1)[1]
        assert (usr / "share" / "man" / f"man{section}" / page).exists(), page
    examples = usr / "share" / "doc" / "mailsuite" / "examples"
    assert (examples / "mailsuite.conf").exists()
    assert (usr / "share" / "doc" / "mailsuite" / "PRIVILEGES.md").exists()
    assert "/usr/bin/pop3d" in (examples / "inetd.conf").read_text()           # the paths are where it went
    assert "/usr/local" not in (examples / "xinetd.d" / "imap").read_text()
    assert not list(tmp_path.glob("stage/usr/local"))                           # nothing under PREFIX/local


@pytest.mark.root
@pytest.mark.slow
def test_installed_programs_run_on_the_system_python(tmp_path):
    python = peers.require("system-python")
    probe = subprocess.run([python, "-c", "import pyinotify, daemon, dns.resolver"], capture_output=True)
    if probe.returncode:
        peers.missing("the system Python lacks mailsuite's dependencies", DEBIAN_DEPENDENCIES)
    local = make_install(tmp_path / "stage")
    assert (local / "bin" / "mail.local").read_text().startswith("#!/usr/bin/python3 ")
    sandbox = tmp_path / "sb"
    script = f"""
set -e
mount --bind {local} /usr/local
cd /
export PATH=/usr/local/bin:/usr/bin:/bin
mailsuite init --dir {sandbox} > /dev/null
conf={sandbox}/mailsuite.conf
grep -q '^sendmail = /usr/local/bin/sendmail$' $conf
printf 'Subject: installed\\n\\nfrom the installed mail.local\\n' | mail.local -C $conf alice
mail -C $conf -u alice -H | grep -q installed
echo 'through sendmail' | sendmail -C $conf -odi bob
mailq -C $conf > /dev/null
printf 'USER alice\\r\\nPASS alice\\r\\nSTAT\\r\\nQUIT\\r\\n' | pop3d -C $conf | grep -q '^+OK 2 '
printf 'a SELECT INBOX\\r\\nb LOGOUT\\r\\n' | imapd -C $conf --preauth alice | grep -q '^\\* 2 EXISTS'
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"through sendmail" in (sandbox / "spool" / "bob").read_bytes()
