"""SIGKILL while `mail` quits: every message ends up in the spool or ~/mbox, both readable."""

import mailbox
import os
import signal
import subprocess
import time

import pytest
from conftest import program


def build_spool(sb, count):
    """COUNT messages written straight through the store (quicker than COUNT mail.local runs)."""
    from mailsuite.core import config
    from mailsuite.store.mailbox import Mailbox
    store = Mailbox(str(sb.spool()), config.load(sb.conf))
    body = "".join(f"line {n} of a message long enough to make the rewrite take a while\n" for n in range(60))
    with store, store.locked():
        for n in range(count):
            store.append(f"From: bob@localhost\nSubject: m{n}\nMessage-ID: <{n}@crash>\n\n{body}".encode(),
                         sender="bob@localhost")


def ids(path):
    if not os.path.exists(path):
        return []
    return [m["Message-ID"] for m in mailbox.mbox(str(path))]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.1, 0.4, 0.6, 0.8, 1.0])
def test_sigkill_during_quit_loses_nothing(mail_sandbox, delay):
    sb = mail_sandbox
    count = 1500
    build_spool(sb, count)
    everything = {f"<{n}@crash>" for n in range(count)}
    # Mark half the messages read (bound for ~/mbox), delete four, quit; SIGKILL DELAY seconds in.
    script = "touch 1-750\nd 5 10 15 20\nq\n"
    child = subprocess.Popen([program("mail"), "-C", sb.conf, "-u", "alice", "-N"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=sb.env)
    child.stdin.write(script.encode())
    child.stdin.close()
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # The next run takes the lock, finishes any interrupted rewrite, and sees a whole mailbox.
    done = sb.mail("-H")
    assert done.returncode == 0, done.stderr
    survivors = set(ids(sb.spool())) | set(ids(sb.home() / "mbox"))
    deleted = {"<4@crash>", "<9@crash>", "<14@crash>", "<19@crash>"}
    assert everything - deleted <= survivors
    assert len(ids(sb.spool())) == len(set(ids(sb.spool())))
