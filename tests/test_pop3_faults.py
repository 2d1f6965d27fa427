"""SIGKILL pop3d while QUIT removes messages: the spool is found before or after, never half.

The delays span the whole UPDATE on this spool (about 50 ms here): kills
land before the rewrite, while its journal is being written (discarded by
the next locker), after the journal is complete (rolled forward), and after.
"""

import mailbox
import os
import signal
import subprocess
import time

import pytest
from conftest import program
from pop3lib import configure

from mailsuite.store.mailbox import Mailbox

MESSAGES = 1500


def build_spool(path):
    """A spool of MESSAGES numbered messages (~3 kB each), written directly."""
    with open(path, "wb") as f:
        for n in range(1, MESSAGES + 1):
            f.write(b"From sender@example.org Mon Nov 23 10:00:00 2026\n"
                    b"From: sender@example.org\nSubject: message %d\n\n" % n)
            f.write((b"body line of message %d\n" % n) * 120 + b"\n")


def subjects(spool):
    return [m["Subject"] for m in mailbox.mbox(spool)]


@pytest.mark.slow
@pytest.mark.parametrize("delay_ms", [0, 5, 20, 40, 50, 60, 70, 100])
def test_sigkill_during_quit_leaves_before_or_after(sandbox, delay_ms):
    configure(sandbox, {"auth": {"failure_delay": "0"}})
    spool = str(sandbox.spool("alice"))
    build_spool(spool)
    before = subjects(spool)
    proc = subprocess.Popen([program("pop3d"), "-C", sandbox.conf], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=sandbox.env)
    proc.stdin.write(b"USER alice\r\nPASS alice\r\nNOOP\r\n")
    proc.stdin.flush()
    for _ in range(4):                       # greeting, USER, PASS, NOOP: logged in, UIDs assigned
        assert proc.stdout.readline().startswith(b"+OK")
    proc.stdin.write(b"DELE 1\r\nDELE 700\r\nQUIT\r\n")
    proc.stdin.flush()
    time.sleep(delay_ms / 1000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    with Mailbox(spool, sandbox.cfg) as box, box.locked():   # the next locker finishes or discards the rewrite
        pass
    after = subjects(spool)
    expunged = [s for s in before if s not in ("message 1", "message 700")]
    assert after in (before, expunged)
