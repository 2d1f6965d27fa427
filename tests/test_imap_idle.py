"""IDLE (RFC 2177): a delivery by mail.local reaches an idling client."""

import os
import select
import subprocess
import time

from imap_support import deliver, imapd_command, set_imap_option


class Client:
    """A raw IMAP client on a child's pipes, reading with a deadline."""

    def __init__(self, sandbox):
        self.proc = subprocess.Popen(imapd_command(sandbox), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=sandbox.env, bufsize=0)
        self.buffer = b""

    def send(self, line):
        self.proc.stdin.write(line + b"\r\n")

    def wait_for(self, needle, timeout=20):
        """Read until `needle` appears; the lines read so far are returned."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while needle not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} in {self.buffer!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"imapd closed the connection: {self.buffer!r}"
                self.buffer += chunk
        text, _, self.buffer = self.buffer.partition(needle)
        return text + needle

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


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
