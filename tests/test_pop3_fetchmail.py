"""fetchmail against pop3d: keep mode (UIDL tracking) and fetch-all-and-delete, into mail.local."""

import pytest
from conftest import mbox_messages, subjects
from pop3lib import Pop3d, deliver_to, fetchmail, message


@pytest.fixture
def server(sandbox):
    running = Pop3d(sandbox)
    yield running
    running.stop()


def test_keep_then_fetch_all_and_delete(sandbox, server, tmp_path):
    for name in ("one", "two", "three"):
        deliver_to(sandbox, "alice", message(name, body=".dot line\nFrom the start\nend\n"))
    fetchmail(sandbox, server, tmp_path, "--keep")
    assert subjects(sandbox.spool("bob")) == ["one", "two", "three"]
    assert subjects(sandbox.spool("alice")) == ["one", "two", "three"]

    again = fetchmail(sandbox, server, tmp_path, "--keep")          # UIDL: nothing new
    assert again.returncode == 1
    assert len(subjects(sandbox.spool("bob"))) == 3

    deliver_to(sandbox, "alice", message("four"))
    fetchmail(sandbox, server, tmp_path, "--keep")
    assert subjects(sandbox.spool("bob")) == ["one", "two", "three", "four"]

    fetchmail(sandbox, server, tmp_path, "--all", "--nokeep")
    assert subjects(sandbox.spool("alice")) == []
    bob = mbox_messages(sandbox.spool("bob"))
    assert [m["Subject"] for m in bob] == ["one", "two", "three", "four"] * 2
    body = bob[0].get_payload()
    assert ".dot line" in body and "From the start" in body
