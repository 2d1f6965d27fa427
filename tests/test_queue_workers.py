"""The runner's delivery workers: long-lived processes, a batch at a time, each mailbox's messages at once.

Group commit: the messages of a batch for one mailbox are appended under
one lock with one crash record and one fsync, and the queue directory is
fsynced once for the whole batch's removals.  A worker that dies costs
each message of its batch one attempt; the others of the batch are tried
again at once, each alone, so only the message that kills workers is held.
"""

import logging
import os
import re
import signal
import time

from mta_helpers import queue_files, set_config, spool_messages

from mailsuite.mta import runner, worker, workerpool
from mailsuite.mta.queue import Queue

LOGGER = logging.getLogger("test")


def enqueue(sandbox, rcpt, subject):
    return Queue(sandbox.cfg).enqueue("s@localhost", [rcpt], b"Subject: %s\n\nbody of %s\n" % ((subject.encode(),) * 2))


def subjects(sandbox, user):
    return [m["Subject"] for m in spool_messages(sandbox.spool(user))]


def test_a_batch_appends_each_mailbox_once(sandbox, monkeypatch):
    queue = Queue(sandbox.cfg)
    qids = [enqueue(sandbox, "alice@localhost", f"a{n}") for n in range(3)] + [enqueue(sandbox, "bob@localhost", "b")]
    synced = []

    def logged(real):
        def sync(fd):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            return real(fd)
        return sync
    monkeypatch.setattr(os, "fsync", logged(os.fsync))
    monkeypatch.setattr(os, "fdatasync", logged(os.fdatasync))
    outcomes = worker.deliver_batch(sandbox.cfg, queue, qids, LOGGER)
    assert sorted(outcomes) == sorted(qids)
    assert all(o.error is None and o.retry is None for o in outcomes.values())
    assert subjects(sandbox, "alice") == ["a0", "a1", "a2"] and subjects(sandbox, "bob") == ["b"]
    alice, bob = str(sandbox.spool("alice")), str(sandbox.spool("bob"))
    assert synced.count(alice) == synced.count(bob) == 1                    # one fsync per mailbox...
    assert len([p for p in synced if p.endswith(".alice.append")]) == 1     # ...and one crash record
    assert synced.count(str(sandbox.dir / "queue" / "active")) == 1         # the removals, once
    assert queue_files(sandbox, "active") == queue_files(sandbox, "incoming") == []


def test_a_worker_killed_with_a_batch_costs_the_others_one_immediate_retry(sandbox, monkeypatch):
    sandbox.cfg.queue.max_workers = 1                  # one worker: the four messages make one batch
    queue = Queue(sandbox.cfg)
    poison = enqueue(sandbox, "alice@localhost", "poison")
    others = [enqueue(sandbox, "alice@localhost", f"ok{n}") for n in range(3)]
    batches = []
    real = workerpool.deliver_batch

    def deliver_batch(cfg, queue, qids, logger):     # runs in the worker: it dies holding its batch
        if poison in qids:
            for qid in qids:
                queue.claim(qid)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(cfg, queue, qids, logger)
    monkeypatch.setattr(workerpool, "deliver_batch", deliver_batch)
    real_dispatch = workerpool.WorkerPool._send
    monkeypatch.setattr(workerpool.WorkerPool, "_send",
                        lambda self, w, batch: batches.append(list(batch)) or real_dispatch(self, w, batch))
    started = time.time()
    runner.run_once(sandbox.cfg, LOGGER)
    assert batches[0] == [poison] + others
    assert [poison] in batches[1:]                     # then each alone
    assert sorted(subjects(sandbox, "alice")) == ["ok0", "ok1", "ok2"]      # delivered in this same run, once
    [held_back] = queue_files(sandbox, "deferred")
    envelope = queue.load(held_back)
    assert held_back == poison and envelope.crashes == 2 and "killed by signal 9" in envelope.reason
    assert envelope.mtime > started                    # its own crash: the back-off of a failed attempt


def test_the_daemon_s_workers_are_reused_and_read_the_aliases_for_each_batch(sandbox, tmp_path):
    import subprocess

    from mta_helpers import sendmail_path, wait_for_messages
    from test_queue_durability import wait_until
    from test_sendmail_daemon import free_port

    from mailsuite.mta import runnerlock
    aliases = sandbox.dir / "aliases"
    aliases.write_text("team: alice\n")
    set_config(sandbox, "smtp", "listen", f"127.0.0.1:{free_port()}")
    set_config(sandbox, "queue", "max_workers", "1")   # one worker at a time: the same pid is the same worker
    proc = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-bD"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=sandbox.env)
    try:
        wait_until(lambda: runnerlock.active(sandbox.cfg.mailsuite.queue_dir))
        for n in range(3):
            assert sandbox.run("sendmail", "-i", "team", input=b"Subject: to alice %d\n\nx\n" % n).returncode == 0
            wait_for_messages(sandbox.spool("alice"), n + 1)
        aliases.write_text("team: bob\n")
        assert sandbox.run("sendmail", "-i", "team", input=b"Subject: to bob\n\nx\n").returncode == 0
        assert [m["Subject"] for m in wait_for_messages(sandbox.spool("bob"), 1)] == ["to bob"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log = (sandbox.dir / "state" / "maillog").read_text()
    workers = re.findall(r"runner\[(\d+)\]: \w+: to=<", log)
    runners = re.findall(r"runner\[(\d+)\]: queue runner started", log)
    assert len(workers) == 4 and len(set(workers)) == 1 and set(workers).isdisjoint(runners)
    assert len(subjects(sandbox, "alice")) == 3
