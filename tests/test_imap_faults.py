"""SIGKILL in the middle of EXPUNGE or a flag write-back leaves a valid mbox."""

import mailbox
import random
import signal
import subprocess
import time

import pytest
from imap_support import imapd_command

from mailsuite.store import mailbox as mbox

COUNT = 400


def fill(sandbox):
    """A spool big enough that an EXPUNGE of message 1 rewrites a lot of file."""
    filler = b"x" * 70 + b"\n"
    with open(sandbox.spool("alice"), "wb") as f:
        for n in range(1, COUNT + 1):
            f.write(b"From sender@example.org Mon Jan  2 10:00:00 2023\n")
            f.write(b"Subject: message %d\nMessage-ID: <%d@test>\n\n" % (n, n))
            f.write(b"marker-%d\n" % n + filler * 400 + b"\n")


def check_spool(sandbox, allowed_counts):
    """Every surviving message is whole; the count is one of the allowed ones."""
    box = mbox.Mailbox(str(sandbox.spool("alice")), sandbox.cfg, owner=sandbox.user("alice"))
    with box.locked():  # rolls an interrupted rewrite forward
        index = box.scan()
        markers = []
        for m in index.messages:
            data = box.read(m)
            body = data.split(b"\n\n", 1)[1]
            assert body.startswith(b"marker-"), data[:200]
            assert body.count(b"x" * 70) == 400
            markers.append(int(body.split(b"\n", 1)[0][7:]))
    box.close()
    assert len(markers) in allowed_counts
    assert markers == sorted(markers) and set(markers) <= set(range(1, COUNT + 1))
    assert len(mailbox.mbox(str(sandbox.spool("alice")))) == len(markers)
    return markers


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(4))
def test_sigkill_during_expunge(sandbox, attempt):
    fill(sandbox)
    proc = subprocess.Popen(imapd_command(sandbox), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=sandbox.env)
    try:
        proc.stdin.write(b"a SELECT INBOX\r\nb STORE 1,5,9 +FLAGS.SILENT (\\Deleted)\r\nc CHECK\r\n")
        proc.stdin.flush()
        while not proc.stdout.readline().startswith(b"c "):
            pass
        proc.stdin.write(b"d EXPUNGE\r\n")
        proc.stdin.flush()
        time.sleep(random.Random(attempt).uniform(0, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    markers = check_spool(sandbox, {COUNT, COUNT - 3})
    if len(markers) == COUNT - 3:
        assert not {1, 5, 9} & set(markers)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_sigkill_during_flag_write_back(sandbox, attempt):
    fill(sandbox)
    proc = subprocess.Popen(imapd_command(sandbox), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=sandbox.env)
    try:
        proc.stdin.write(b"a SELECT INBOX\r\nb STORE 1:* +FLAGS.SILENT (\\Seen \\Flagged $A $B $C $D $E $F)\r\n")
        proc.stdin.flush()
        time.sleep(random.Random(attempt).uniform(0, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    check_spool(sandbox, {COUNT})
