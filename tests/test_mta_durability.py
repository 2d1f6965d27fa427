"""The MTA keeps its promises through crashes: no duplicate, no loss, nothing left behind.

Killed workers, runners and daemons, a user's sendmail killed around its
commit, and remote domains that answer slowly: every message that got 250
(or exit 0) is delivered once, and the queue's tmp/ and the maildrop hold
nothing that is nobody's.
"""

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from mta_helpers import MESSAGE, queue_files, sendmail_path, set_config
from procs import children_of, runner_of
from smtp_helpers import Instance, wait_for

from mailsuite.mta.queue import Queue


class Tarpit:
    """A host that accepts connections and never says a word."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.clients = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.clients.append(conn)
            self.accepted.set()

    def close(self):
        self.sock.close()
        for conn in self.clients:
            conn.close()


def test_a_worker_killed_on_a_slow_domain_does_not_resend_to_the_domains_done(sandbox, tmp_path):
    fast = Instance(tmp_path / "fast", domain="fast.test").start()          # no runner: mail stays queued there
    slow = Tarpit()
    try:
        set_config(sandbox, "smtp", "static_routes",
                   f"fast.test=127.0.0.1:{fast.port} slow.test=127.0.0.1:{slow.port}")
        set_config(sandbox, "smtp", "connect_timeout", "60s")
        set_config(sandbox, "queue", "min_backoff", "1s")
        assert sandbox.run("sendmail", "-odq", "-i", "alice@fast.test", "carol@slow.test",
                           input=MESSAGE).returncode == 0
        runner = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-q"], stderr=subprocess.DEVNULL)
        try:
            assert slow.accepted.wait(30)                       # fast.test is done; slow.test hangs
            wait_for(lambda: len(fast.queued()) == 1)
            [worker] = children_of(runner.pid)
            os.kill(worker, signal.SIGKILL)
            assert runner.wait(timeout=30) == 0
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
        [qid] = queue_files(sandbox, "deferred") + queue_files(sandbox, "incoming")
        record = Queue(sandbox.cfg).load(qid).result("alice@fast.test", "remote:alice@fast.test")
        assert record and record["s"] == "sent"
        slow.close()
        set_config(sandbox, "smtp", "static_routes", f"fast.test=127.0.0.1:{fast.port} slow.test=127.0.0.1:{fast.port}")
        assert sandbox.run("sendmail", f"-qI{qid}").returncode == 0
        received = [envelope.recipients for envelope, _data in fast.queued()]
        assert received == [["alice@fast.test"], ["carol@slow.test"]]
        assert queue_files(sandbox, "deferred") == []
    finally:
        slow.close()
        fast.stop()


KILLED_AFTER_APPEND = """
import os, signal, sys
from mailsuite.core import cli
from mailsuite.store import mailbox as mbox
from mailsuite.mta import sendmail
real = mbox.Mailbox.append_deliveries
def append_deliveries(self, *args, **kwargs):
    real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)        # the message is in the mailbox, its record is not
mbox.Mailbox.append_deliveries = append_deliveries
cli.run(sendmail.main, ["sendmail"] + sys.argv[1:])
"""


def test_a_worker_killed_between_append_and_record_does_not_deliver_twice(sandbox):
    import sys

    from mta_helpers import spool_messages
    assert sandbox.run("sendmail", "-odq", "-i", "alice", input=MESSAGE).returncode == 0
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_APPEND, "-C", sandbox.conf, "-q"],
                            capture_output=True, timeout=60)
    assert killed.returncode == 0, killed.stderr
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    [qid] = queue_files(sandbox, "deferred") + queue_files(sandbox, "incoming")
    assert sandbox.run("sendmail", f"-qI{qid}").returncode == 0
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert queue_files(sandbox, "deferred") == queue_files(sandbox, "incoming") == []


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass                                                 # it ended on its own meanwhile


@pytest.mark.slow
def test_sigkills_of_the_daemon_its_runner_and_workers_with_20_clients(tmp_path):
    """Every message that got 250 is delivered exactly once; queue/tmp ends empty."""
    import mailbox
    import random
    import smtplib
    host = Instance(tmp_path / "host", queue={"hold_after_crashes": "1000", "max_workers": "4"})
    host.start(runner=True)
    stop = threading.Event()
    acked, tried = set(), set()
    lock = threading.Lock()

    def client(n):
        seq = 0
        while not stop.is_set():
            seq += 1
            mid = f"<c{n}-{seq}@client.test>"
            with lock:
                tried.add(mid)
            try:
                with smtplib.SMTP("127.0.0.1", host.port, timeout=20) as smtp:
                    smtp.sendmail("carol@client.test", [random.choice(["alice", "bob"]) + "@example.test"],
                                  f"Message-ID: {mid}\r\nSubject: {mid}\r\n\r\nbody\r\n".encode())
                with lock:
                    acked.add(mid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)                 # the daemon is down or was killed: try the next message

    clients = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in clients:
        thread.start()
    try:
        try:
            for round_ in range(24):
                time.sleep(0.4)
                master = host.process.pid
                runner = runner_of(master, host.dir / "queue")
                if round_ % 8 == 7:
                    _kill(master)                                # the daemon itself: start another
                    host.process.wait()
                    host.process.stdout.close()
                    host.log.close()
                    host.start(runner=True)
                elif round_ % 4 == 3 and runner:
                    _kill(runner)                                # the master starts another runner
                elif runner:
                    for worker in children_of(runner):
                        _kill(worker)
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)

        def settled():
            busy = any((host.dir / "queue" / state).exists() and os.listdir(host.dir / "queue" / state)
                       for state in ("incoming", "active", "deferred"))
            return not busy and not os.listdir(host.dir / "queue" / "tmp")
        wait_for(settled, timeout=90)
        delivered = {}
        for user in ("alice", "bob"):
            box = mailbox.mbox(str(host.dir / "spool" / user), create=False)
            for message in box:
                delivered[message["Message-ID"]] = delivered.get(message["Message-ID"], 0) + 1
            box.close()
    finally:
        host.stop()
    assert len(acked) > 100
    assert {mid: n for mid, n in delivered.items() if n > 1} == {}
    assert acked <= set(delivered) <= tried
    assert not (host.dir / "queue" / "hold").exists() or not os.listdir(host.dir / "queue" / "hold")
