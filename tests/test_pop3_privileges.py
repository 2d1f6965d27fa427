"""As root, pop3d runs each session as the logged-in user and refuses spools that are not the user's."""

import grp
import os
import poplib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import program
from mailsuite.passwords import hash_password
from pop3lib import LISTENING, children_of

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CAROL, DAVE = 54321, 54322


@pytest.fixture
def system(tmp_path):
    """A system-mode installation (not the sandbox) in a directory every uid can traverse."""
    top = Path(tempfile.mkdtemp(prefix="mailsuite-priv-"))
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
    (top / "passwd").write_text("".join(lines))
    conf = top / "mailsuite.conf"
    conf.write_text(f"[mailsuite]\nspool_dir = {spool}\npasswd_file = {top / 'passwd'}\nlog_socket =\n"
                    f"state_dir = {top / 'state'}\n\n[auth]\nfailure_delay = 0\npam = no\n\n"
                    f"[pop3]\nlisten = 127.0.0.1:0\n")
    proc = subprocess.Popen([program("pop3d"), "-C", str(conf), "-d"], stderr=subprocess.PIPE)
    port = None
    while port is None:
        line = proc.stderr.readline()
        assert line, "pop3d exited"
        m = LISTENING.search(line)
        port = int(m.group(1)) if m else None
    yield top, port, proc
    for pid in children_of(proc.pid):
        os.kill(pid, 15)
    proc.terminate()
    proc.wait(10)
    proc.stderr.close()
    shutil.rmtree(top)


def status_of(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def test_session_runs_as_the_user(system):
    top, port, proc = system
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("carol")
    pop.pass_("carol")
    (session,) = children_of(proc.pid)
    status = status_of(session)
    assert status["Uid"] == [str(CAROL)] * 4
    assert status["Gid"] == [str(CAROL)] * 4
    assert status["Groups"] == [str(grp.getgrnam("mail").gr_gid)]
    assert status["CapEff"] == ["0000000000000000"]
    _, lines, _ = pop.retr(1)
    assert b"Subject: for carol" in lines
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")
    assert (top / "spool" / "carol").read_bytes() == b""
    assert os.stat(top / "spool" / "carol").st_uid == CAROL


def test_another_users_spool_is_refused(system):
    top, port, _ = system
    carol = top / "spool" / "carol"
    carol.unlink()
    carol.symlink_to(top / "spool" / "dave")
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("carol")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\]"):
        pop.pass_("carol")
    carol.unlink()
    shutil.copyfile(top / "spool" / "dave", carol)
    os.chown(carol, DAVE, -1)                       # a spool owned by someone else
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("carol")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\]"):
        pop.pass_("carol")
    assert b"Subject: for dave" in (top / "spool" / "dave").read_bytes()


def test_root_and_system_accounts_cannot_log_in(system):
    top, port, _ = system
    with open(top / "passwd", "a") as f:
        f.write(f"toor:{hash_password('toor')}:0:0:root:/root\n")
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("toor")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.pass_("toor")
