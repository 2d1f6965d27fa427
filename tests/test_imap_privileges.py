"""As root, imapd runs each session as the logged-in user and refuses what is not the user's."""

import grp
import imaplib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import program
from mailsuite.passwords import hash_password
from pop3lib import children_of

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CAROL, DAVE = 54331, 54332


@pytest.fixture
def system():
    """A system-mode installation (not the sandbox) in a directory every uid can traverse."""
    top = Path(tempfile.mkdtemp(prefix="imapd-priv-"))
    top.chmod(0o755)
    mail_gid = grp.getgrnam("mail").gr_gid
    spool = top / "spool"
    spool.mkdir()
    os.chown(spool, 0, mail_gid)
    spool.chmod(0o2775)
    lines = []
    for name, uid in (("carol", CAROL), ("dave", DAVE)):
        home = top / "home" / name
        home.mkdir(parents=True)
        os.chown(home, uid, uid)
        box = spool / name
        box.write_bytes(f"From x@example.org Mon Nov 23 10:00:00 2026\nSubject: for {name}\n\nhi\n".encode())
        os.chown(box, uid, mail_gid)
        box.chmod(0o600)
        lines.append(f"{name}:{hash_password(name)}:{uid}:{uid}:{name}:{home}\n")
    lines.append(f"root:{hash_password('root')}:0:0:root:/root\n")
    (top / "passwd").write_text("".join(lines))
    conf = top / "mailsuite.conf"
    conf.write_text(f"[mailsuite]\nspool_dir = {spool}\npasswd_file = {top / 'passwd'}\nlog_socket =\n"
                    f"state_dir = {top / 'state'}\n\n[auth]\nfailure_delay = 0\npam = no\n\n"
                    f"[imap]\nlisten = 127.0.0.1:0\n")
    proc = subprocess.Popen([program("imapd"), "-C", str(conf), "-d"], stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    assert port, "imapd -d did not start"
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    yield top, port, proc
    for pid in children_of(proc.pid):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass  # the session ended on its own meanwhile
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(top)


def uids_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return {int(x) for x in line.split()[1:]}


def test_session_runs_as_the_user(system):
    top, port, proc = system
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("carol", "carol")
    assert imap.select("INBOX") == ("OK", [b"1"])
    assert imap.create("Folder")[0] == "OK"
    sessions = children_of(proc.pid)
    assert sessions and all(uids_of(pid) == {CAROL} for pid in sessions)
    assert (top / "home" / "carol" / "mail" / "Folder").stat().st_uid == CAROL
    assert imap.select("../../spool/dave")[0] == "NO"
    imap.logout()


def test_foreign_spool_is_refused(system):
    top, port, proc = system
    os.chown(top / "spool" / "carol", DAVE, -1)
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("carol", "carol")
    typ, data = imap.select("INBOX")
    assert typ == "NO"
    imap.logout()
    assert (top / "spool" / "carol").read_bytes().count(b"Subject: for carol") == 1


def test_root_cannot_log_in(system):
    top, port, proc = system
    imap = imaplib.IMAP4("127.0.0.1", port)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login("root", "root")
    imap.logout()
