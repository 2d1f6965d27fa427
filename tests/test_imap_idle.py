"""IDLE (RFC 2177): a delivery by mail.local reaches an idling client."""

import time

from imap_support import RawClient as Client
from imap_support import deliver, set_imap_option


def test_delivery_wakes_idle(sandbox):
    set_imap_option(sandbox, "idle_poll", "10m")  # so only inotify can wake it in time
    client = Client(sandbox)
    client.send(b"a SELECT INBOX")
    client.wait_for(b"a OK")
    client.send(b"b IDLE")
    client.wait_for(b"+ idling")
    started = time.monotonic()
    deliver(sandbox, "alice", b"Subject: wake up\n\nnow\n")
    client.wait_for(b"* 1 EXISTS", timeout=60)
    woke_after = time.monotonic() - started
    client.wait_for(b"* 1 RECENT")
    client.send(b"DONE")
    client.wait_for(b"b OK IDLE terminated")
    client.send(b"c FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: wake up" in client.wait_for(b"c OK")
    client.send(b"d LOGOUT")
    client.wait_for(b"d OK")
    client.close()
    assert woke_after < 600  # long before the fallback poll: inotify woke it


def test_idle_sees_flags_and_expunges_from_another_session(sandbox):
    deliver(sandbox, "alice", b"Subject: one\n\n1\n")
    deliver(sandbox, "alice", b"Subject: two\n\n2\n")
    set_imap_option(sandbox, "idle_poll", "10m")
    idler, other = Client(sandbox), Client(sandbox)
    idler.send(b"a SELECT INBOX")
    idler.wait_for(b"a OK")
    idler.send(b"b IDLE")
    idler.wait_for(b"+ idling")
    other.send(b"a SELECT INBOX")
    other.wait_for(b"a OK")
    other.send(b"b STORE 1 +FLAGS (\\Deleted \\Flagged)")
    other.wait_for(b"b OK")
    idler.wait_for(b"* 1 FETCH (FLAGS (")
    assert b"\\Flagged" in idler.wait_for(b")")
    other.send(b"c EXPUNGE")
    other.wait_for(b"c OK")
    idler.wait_for(b"* 1 EXPUNGE")
    idler.send(b"DONE")
    idler.wait_for(b"b OK")
    for c in (idler, other):
        c.send(b"z LOGOUT")
        c.wait_for(b"z OK")
        c.close()


def test_idle_needs_done(sandbox):
    client = Client(sandbox)
    client.send(b"a IDLE")
    client.wait_for(b"+ idling")
    client.send(b"NOT DONE")
    client.wait_for(b"a BAD expected DONE")
    client.send(b"z LOGOUT")
    client.wait_for(b"z OK")
    client.close()
