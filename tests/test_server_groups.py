"""After login a pop3d or imapd session holds no group that can write the spool directory.

The attack (issue 10, item 4): on Debian's 2775 root:mail /var/mail, a
session that kept the supplementary group `mail` let a user with
`ln -s /var/spool/mail ~/mail` RENAME and CREATE other users' spools over
IMAP.  Sessions now keep the mail gid only as their saved gid, enabled
around dotlock creation alone, and a folder directory that resolves into
the spool directory is refused.  Played by real users, through PAM, under
openbsd-inetd and with -d.
"""

import imaplib
import os
import poplib
import time

import pytest
from conftest import mbox_messages
from procs import children_of, start_listener, stop_listener
from realsystem import Inetd, process_status

pytestmark = pytest.mark.root


@pytest.fixture(params=["daemon", "inetd"])
def serve(request, tmp_path):
    """serve(installation, program) -> (port, pid of the process whose children are the sessions)."""
    running = []

    def start(installation, name):
        if request.param == "daemon":
            proc, port = start_listener(installation.command(name, "-d"))
            running.append(lambda: stop_listener(proc))
            return port, proc.pid
        inetd = Inetd(installation.command(name), tmp_path)
        running.append(inetd.stop)
        return inetd.port, inetd.proc.pid

    yield start
    for stop in running:
        stop()


def session_of(parent, uid):
    """The pid of the session child of PARENT that runs as UID."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in children_of(parent):
            try:
                if process_status(pid)["Uid"][0] == str(uid):
                    return pid
            except FileNotFoundError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no session of uid {uid} under pid {parent}")


def assert_no_spool_group(status, user, mail_gid):
    """Only the user's own gid is in force; the mail gid at most as the saved gid."""
    real, effective, saved, filesystem = (int(g) for g in status["Gid"])
    assert (real, effective, filesystem) == (user.gid,) * 3
    assert saved in (user.gid, mail_gid)
    assert status["Groups"] == []
    assert status["CapEff"] == ["0000000000000000"]


def test_imap_user_cannot_rename_or_create_spools(real_users, pam_service, installation_factory, serve):
    attacker, victim = real_users.add("secA"), real_users.add("secB")
    system = installation_factory([attacker, victim], pam_service)
    link = attacker.home / "mail"
    link.symlink_to(system.spool)
    os.lchown(link, attacker.uid, attacker.gid)
    before = sorted(os.listdir(system.spool))
    port, parent = serve(system, "imapd")

    imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    imap.login(attacker.name, attacker.password)
    session = session_of(parent, attacker.uid)
    assert_no_spool_group(process_status(session), attacker, system.mail_gid)
    # nor can the user borrow the reserved group by attaching to their session
    assert attacker.run(["cat", f"/proc/{session}/environ"]).returncode != 0
    assert imap.rename(victim.name, victim.name + "-stolen")[0] == "NO"
    assert imap.create(victim.name + "-planted")[0] == "NO"
    assert imap.delete(victim.name)[0] == "NO"
    typ, listing = imap.list()
    assert typ == "OK" and not any(victim.name.encode() in line for line in listing)
    assert sorted(os.listdir(system.spool)) == before
    assert (system.spool / victim.name).read_bytes().count(b"Subject: for") == 1

    # The user's own INBOX still changes: the dotlock is made with the mail gid held in reserve.
    assert imap.select("INBOX") == ("OK", [b"1"])
    assert imap.store("1", "+FLAGS", "\\Deleted")[0] == "OK"
    assert imap.expunge()[0] == "OK"
    imap.logout()
    assert mbox_messages(system.spool / attacker.name) == []                # only the UID-keeping pseudo-message
    assert sorted(name for name in os.listdir(system.spool) if not name.startswith(".")) == before


def test_pop3_session_holds_no_spool_group(real_users, pam_service, installation_factory, serve):
    user = real_users.add("secA")
    system = installation_factory([user], pam_service)
    port, parent = serve(system, "pop3d")

    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    pop.user(user.name)
    assert pop.pass_(user.password).startswith(b"+OK")
    assert_no_spool_group(process_status(session_of(parent, user.uid)), user, system.mail_gid)
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")
    assert mbox_messages(system.spool / user.name) == []                    # only the UID-keeping pseudo-message
    assert [name for name in os.listdir(system.spool) if not name.startswith(".")] == [user.name]
