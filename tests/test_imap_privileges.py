"""As root, imapd runs each session as the logged-in user and refuses what is not the user's."""

import imaplib
import os

import pytest
from conftest import program
from procs import children_of, start_listener, stop_listener, system_installation

pytestmark = pytest.mark.root

CAROL, DAVE = 54331, 54332


@pytest.fixture
def system():
    """A system-mode installation (not the sandbox) with its daemon listening."""
    top, conf = system_installation("imap", {"carol": CAROL, "dave": DAVE}, root_login=True)
    proc, port = start_listener([program("imapd"), "-C", str(conf), "-d"])
    yield top, port, proc
    stop_listener(proc, top)


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


def test_what_sessions_load_late_is_loaded_before_the_drop(system):
    """IDLE, FETCH's MIME parser and SEARCH's decoders are imported only when used, yet work after the drop.

    The interpreter's library under /root is closed to the user the session
    became, so anything imported after the drop that was not loaded before
    it would fail here.
    """
    top, port, proc = system
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("carol", "carol")
    imap.select("INBOX")
    typ, data = imap.fetch("1", "(BODYSTRUCTURE ENVELOPE BODY.PEEK[])")
    assert typ == "OK" and b"BODYSTRUCTURE" in data[0][0]
    typ, data = imap.search(None, "TEXT", "carol")
    assert typ == "OK" and data[0].split() == [b"1"]
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    assert imap.readline().startswith(b"+")
    imap.send(b"DONE\r\n")
    assert imap.readline().startswith(tag + b" OK")
    imap.logout()
