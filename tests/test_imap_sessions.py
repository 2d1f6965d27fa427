"""Two sessions on one mailbox, against our imapd and Dovecot alike (issue 12, items 1-3).

Each scenario runs unchanged on both servers over the same spool, read with
the raw client of imap_wire.py, which keeps every untagged response in
order.  Dovecot is configured for concurrent sessions on one mbox (see
imap_support.Dovecot), so its sessions see each other's changes at their
next command, as ours do.
"""

import peers
import pytest
from imap_support import DOVECOT_IMAP, RUN_AS, Dovecot, deliver, imapd_command, shared_sandbox
from imap_wire import Session

SYSTEM = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]

shared = pytest.fixture(shared_sandbox)


@pytest.fixture(params=["imapd", "dovecot"])
def connect(request, shared):
    """A function opening one more session on the shared sandbox's INBOX owner, on either server."""
    if request.param == "dovecot":
        peers.require("dovecot-imap")
        dovecot = Dovecot(shared, run_as=RUN_AS, concurrent=True)
        argv, env = [DOVECOT_IMAP, "-c", str(dovecot.conf)], dovecot.env
    else:
        argv, env = imapd_command(shared, as_user=RUN_AS), shared.env
    sessions = []

    def open_session():
        sessions.append(Session(argv, env))
        return sessions[-1]

    open_session.sandbox = shared
    yield open_session
    for session in sessions:
        session.close()


def fill(connect, count):
    for n in range(1, count + 1):
        deliver(connect.sandbox, "alice", b"Subject: message %d\n\nbody %d\n" % (n, n), as_user=RUN_AS)


def ok(reply):
    assert reply.ok, (reply.status, reply.text, reply.raw)
    return reply


def fetched(reply):
    """{message number: items} of a reply's FETCH responses, later ones updating earlier ones."""
    out = {}
    for response in reply.untagged:
        if response[0] == "FETCH":
            out.setdefault(response[1], {}).update(response[2])
    return out


def kinds(reply):
    return [response[0] for response in reply.untagged]


def flags(reply, number):
    return set(fetched(reply)[number]["FLAGS"]) - {"\\Recent"}


def test_flag_changes_are_kept_between_sessions(connect):
    """+FLAGS/-FLAGS change what the file holds; neither session's stale view is written back."""
    fill(connect, 1)
    first = connect()
    ok(first.command("SELECT INBOX"))
    ok(first.command("STORE 1 +FLAGS (\\Seen)"))
    first.close()
    a, b = connect(), connect()
    ok(a.command("SELECT INBOX"))
    ok(b.command("SELECT INBOX"))
    assert flags(ok(a.command("STORE 1 +FLAGS (\\Answered)")), 1) == {"\\Seen", "\\Answered"}
    assert flags(ok(b.command("STORE 1 -FLAGS (\\Seen)")), 1) == {"\\Answered"}
    assert flags(ok(a.command("STORE 1 +FLAGS ($a)")), 1) == {"\\Answered", "$a"}
    assert flags(ok(b.command("STORE 1 +FLAGS ($b)")), 1) == {"\\Answered", "$a", "$b"}
    assert flags(ok(a.command("STORE 1 -FLAGS ($a)")), 1) == {"\\Answered", "$b"}
    a.close()
    b.close()
    last = connect()
    ok(last.command("EXAMINE INBOX"))
    assert flags(ok(last.command("FETCH 1 FLAGS")), 1) == {"\\Answered", "$b"}


def test_an_expunge_elsewhere_is_announced_at_the_next_noop(connect):
    """Held back during FETCH, STORE and SEARCH (RFC 3501 7.4.1), sent at NOOP; FETCH 1:* skips nothing."""
    fill(connect, 3)
    a, b = connect(), connect()
    ok(a.command("SELECT INBOX"))
    ok(b.command("SELECT INBOX"))
    ok(a.command("STORE 2 +FLAGS (\\Deleted)"))
    assert ("EXPUNGE", 2) in ok(a.command("EXPUNGE")).untagged
    reply = ok(b.command("FETCH 1:* (UID FLAGS)"))
    assert {n: items["UID"] for n, items in fetched(reply).items()} == {1: 1, 2: 2, 3: 3}
    reply = ok(b.command("FETCH 1:* (UID BODY.PEEK[TEXT])"))
    assert sorted(fetched(reply)) == [1, 2, 3] and reply.code == "EXPUNGEISSUED"
    assert fetched(reply)[3]["BODY[TEXT]"] == b"body 3\r\n"
    for command in ("STORE 1 +FLAGS (\\Flagged)", "SEARCH ALL", "FETCH 1 FLAGS"):
        assert "EXPUNGE" not in kinds(ok(b.command(command))), command
    assert ("EXPUNGE", 2) in ok(b.command("NOOP")).untagged
    assert "EXPUNGE" not in kinds(ok(b.command("NOOP")))
    reply = ok(b.command("FETCH 1:* (UID)"))
    assert {n: items["UID"] for n, items in fetched(reply).items()} == {1: 1, 2: 3}


def test_an_expunge_elsewhere_is_announced_at_check(connect):
    fill(connect, 2)
    a, b = connect(), connect()
    ok(a.command("SELECT INBOX"))
    ok(b.command("SELECT INBOX"))
    ok(a.command("STORE 1 +FLAGS.SILENT (\\Deleted)"))
    ok(a.command("EXPUNGE"))
    ok(b.command("FETCH 1:* (UID FLAGS)"))
    assert ("EXPUNGE", 1) in ok(b.command("CHECK")).untagged


def test_a_new_keyword_is_announced_before_a_fetch_shows_it(connect):
    """* FLAGS (and PERMANENTFLAGS) come before the first FETCH FLAGS with a new keyword (RFC 3501 7.2.6)."""
    fill(connect, 2)
    a, b = connect(), connect()
    ok(a.command("SELECT INBOX"))
    ok(b.command("SELECT INBOX"))
    reply = ok(a.command("STORE 1 +FLAGS ($Work)"))
    assert kinds(reply)[:3] == ["FLAGS", "OK", "FETCH"]
    assert reply.untagged[0][1] == SYSTEM + ["$Work"] and reply.untagged[1][1] == "PERMANENTFLAGS"
    reply = ok(b.command("NOOP"))
    assert kinds(reply).index("FLAGS") < kinds(reply).index("FETCH")
    assert "$Work" in reply.untagged[kinds(reply).index("FLAGS")][1]
    assert "$Work" in flags(reply, 1)
    ok(b.command("STORE 2 +FLAGS.SILENT ($Home)"))
    reply = ok(a.command("FETCH 1:2 (FLAGS)"))
    shown = [n for n, r in enumerate(reply.untagged) if r[0] == "FETCH" and "$Home" in r[2]["FLAGS"]]
    announced = [n for n, r in enumerate(reply.untagged) if r[0] == "FLAGS" and "$Home" in r[1]]
    assert shown and announced and announced[0] < shown[0]


def test_a_delivery_seen_while_storing_flags_is_announced(connect):
    """A STORE that rewrote the file after a delivery must not leave the new message unannounced for ever."""
    fill(connect, 2)
    a = connect()
    ok(a.command("SELECT INBOX"))
    deliver(connect.sandbox, "alice", b"Subject: message 3\n\nbody 3\n", as_user=RUN_AS)
    ok(a.command("STORE 1 +FLAGS (\\Flagged)"))
    exists = [r for r in ok(a.command("NOOP")).untagged + ok(a.command("NOOP")).untagged if r[0] == "EXISTS"]
    reply = ok(a.command("FETCH 1:* (UID)"))
    assert sorted(fetched(reply)) == [1, 2, 3], (exists, reply.raw)
