"""Deliveries and a second session keep working while a client reads a big mailbox."""

import re
import subprocess
import threading

import pytest
from imap_support import deliver, imapd, imapd_command

COUNT = 1500


def fill(sandbox):
    body = (b"y" * 75 + b"\n") * 200
    with open(sandbox.spool("alice"), "wb") as f:
        for n in range(1, COUNT + 1):
            f.write(b"From s@example.org Mon Jan  2 10:00:00 2023\nSubject: big %d\n\nstart-%d\n" % (n, n))
            f.write(body + b"\n")


@pytest.mark.slow
def test_delivery_and_expunge_during_a_full_fetch(sandbox):
    fill(sandbox)
    reader = subprocess.Popen(imapd_command(sandbox), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=sandbox.env)
    reader.stdin.write(b"a SELECT INBOX\r\nb FETCH 1:* (UID BODY.PEEK[TEXT])\r\n")
    reader.stdin.flush()
    output = []
    thread = threading.Thread(target=lambda: output.append(reader.stdout.read()))
    thread.start()
    for n in range(5):
        deliver(sandbox, "alice", b"Subject: during %d\n\nwhile fetching\n" % n)
    other = imapd(sandbox)
    other.select("INBOX")
    other.store("2", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.logout()
    reader.stdin.write(b"c NOOP\r\nd LOGOUT\r\n")
    reader.stdin.close()
    thread.join(120)
    assert reader.wait(60) == 0
    out = output[0]
    assert b"b OK FETCH completed" in out and b"d OK LOGOUT completed" in out
    bodies = re.findall(rb"\* (\d+) FETCH \(UID (\d+) BODY\[TEXT\] \{(\d+)\}\r\nstart-(\d+)\r\n", out)
    # every message read is whole and the right one; only the one expunged meanwhile may be missing
    wrong = [b for b in bodies if int(b[1]) != int(b[3]) or int(b[2]) != 200 * 77 + 8 + len(b[3])]
    assert not wrong, wrong[:3]
    assert len(bodies) in (COUNT, COUNT - 1)
    after = out.split(b"b OK FETCH completed", 1)[1]
    assert b"* 2 EXPUNGE" in after and b"EXISTS" in out
