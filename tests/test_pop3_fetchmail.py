"""fetchmail against pop3d: keep mode (UIDL tracking) and fetch-all-and-delete, into mail.local."""

import mailbox
import subprocess

import pytest

from conftest import need, program, subjects
from pop3lib import Pop3d, deliver_to, message


@pytest.fixture
def server(sandbox):
    running = Pop3d(sandbox)
    yield running
    running.stop()


def fetchmail(sandbox, server, tmp_path, *options):
    """One fetchmail run for alice, delivering each message to bob with our mail.local."""
    home = tmp_path / "fetchmail-home"
    home.mkdir(exist_ok=True)
    rc = home / ".fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 port {server.port} protocol pop3 user alice password alice is bob here\n')
    rc.chmod(0o600)
    env = dict(sandbox.env, HOME=str(home), FETCHMAILHOME=str(home))
    done = subprocess.run([need("fetchmail"), "-f", str(rc), "--nodetach", "--sslproto", "", "--uidl",
                           "--mda", f"{program('mail.local')} -C {sandbox.conf} -f %F bob", *options],
                          env=env, capture_output=True, timeout=120)
    # fetchmail exits 1 when there was no mail
    assert done.returncode in (0, 1), done.stderr.decode()
    return done


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
    bob = list(mailbox.mbox(sandbox.spool("bob")))
    assert [m["Subject"] for m in bob] == ["one", "two", "three", "four"] * 2
    body = bob[0].get_payload()
    assert ".dot line" in body and "From the start" in body
