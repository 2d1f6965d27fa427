"""As root, pop3d runs each session as the logged-in user and refuses spools that are not the user's."""

import grp
import os
import poplib
import shutil

import pytest
from conftest import program, subjects
from procs import children_of, start_listener, stop_listener, system_installation
from realsystem import process_status

from mailsuite.server.passwords import hash_password

pytestmark = pytest.mark.root

CAROL, DAVE = 54321, 54322


@pytest.fixture
def system():
    """A system-mode installation (not the sandbox) with its daemon listening."""
    top, conf = system_installation("pop3", {"carol": CAROL, "dave": DAVE})
    proc, port = start_listener([program("pop3d"), "-C", str(conf), "-d"])
    yield top, port, proc
    stop_listener(proc, top)



def test_session_runs_as_the_user(system):
    top, port, proc = system
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("carol")
    pop.pass_("carol")
    (session,) = children_of(proc.pid)
    status = process_status(session)
    assert status["Uid"] == [str(CAROL)] * 4
    mail_gid = str(grp.getgrnam("mail").gr_gid)
    assert status["Gid"] == [str(CAROL), str(CAROL), mail_gid, str(CAROL)]   # mail only in reserve
    assert status["Groups"] == []
    assert status["CapEff"] == ["0000000000000000"]
    _, lines, _ = pop.retr(1)
    assert b"Subject: for carol" in lines
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")
    assert subjects(top / "spool" / "carol") == []
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
