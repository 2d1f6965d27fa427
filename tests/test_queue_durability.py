"""The queue keeps mail through crashes and full disks, and never delivers twice."""

import os
import signal
import subprocess
import time

import peers
import pytest
from mta_helpers import MESSAGE, queue_files, sendmail_path, set_config, spool_messages
from procs import children_of

from mailsuite.core import config
from mailsuite.mta.queue import Queue, QueueFull


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_sigkill_of_a_worker_mid_delivery(sandbox, tmp_path):
    started = tmp_path / "started"
    out = tmp_path / "out"
    aliases = sandbox.dir / "aliases"
    aliases.write_text(f'slow: alice, "|touch {started}; sleep 30"\n')
    assert sandbox.run("sendmail", "-odq", "-i", "slow", input=MESSAGE).returncode == 0
    runner = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-q"], stderr=subprocess.DEVNULL)
    try:
        wait_until(started.exists)
        [worker] = children_of(runner.pid)
        commands = children_of(worker)
        os.kill(worker, signal.SIGKILL)
        assert runner.wait(timeout=20) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    for pid in commands:                       # the orphaned command (its own session)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # the runner that saw it die took the message back, deferred like a failed attempt
    [qid] = queue_files(sandbox, "deferred")
    envelope = Queue(sandbox.cfg).load(qid)
    assert (envelope.attempts, envelope.crashes) == (1, 1)
    assert "killed by signal 9" in envelope.reason
    assert envelope.mtime > time.time()
    assert len(spool_messages(sandbox.spool("alice"))) == 1   # delivered before the kill, intact
    aliases.write_text(f'slow: alice, "|cat > {out}"\n')
    assert sandbox.run("sendmail", f"-qI{qid}").returncode == 0      # finishes, due or not
    assert out.read_bytes().count(b"Subject: hello") == 1
    assert len(spool_messages(sandbox.spool("alice"))) == 1   # no duplicate
    assert queue_files(sandbox, "active") == queue_files(sandbox, "deferred") == []


def test_torn_record_is_ignored(sandbox):
    queue = Queue(sandbox.cfg)
    qid = queue.enqueue("a@localhost", ["alice@localhost"], MESSAGE)
    path = sandbox.dir / "queue" / "incoming" / qid
    with open(path, "ab") as f:
        f.write(b'{"r":"alice@localhost","t":"mailbox:alice","s":"se')   # crash mid-record
    env = queue.load(qid)
    assert env.results == {}
    assert sandbox.run("sendmail", "-q").returncode == 0
    assert len(spool_messages(sandbox.spool("alice"))) == 1


def test_enqueue_is_complete_or_absent(sandbox):
    queue = Queue(sandbox.cfg)
    with pytest.raises(ValueError):
        queue.enqueue("a@localhost", [], MESSAGE)
    assert queue_files(sandbox, "incoming") == queue_files(sandbox, "tmp") == []


def test_low_free_space_refuses_with_queue_full(sandbox):
    set_config(sandbox, "queue", "min_free_space", "100000G")
    cfg = config.load(sandbox.conf)
    with pytest.raises(QueueFull):
        Queue(cfg).enqueue("a@localhost", ["alice@localhost"], MESSAGE)
    # sendmail still accepts: the message waits in the maildrop until there is room
    assert sandbox.run("sendmail", "-odi", "alice", input=MESSAGE).returncode == 0
    assert len(list((sandbox.dir / "maildrop").iterdir())) == 1
    assert spool_messages(sandbox.spool("alice")) == []


@pytest.mark.root
def test_full_disk_gives_queue_full_and_leaves_nothing(sandbox, tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]).returncode:
        peers.unavailable("mounting a tmpfs", "mount -t tmpfs failed")
    try:
        text = open(sandbox.conf).read().replace(str(sandbox.dir / "queue"), str(mount / "queue"))
        open(sandbox.conf, "w").write(text)
        set_config(sandbox, "queue", "min_free_space", "0")
        cfg = config.load(sandbox.conf)
        queue = Queue(cfg)
        small = queue.enqueue("a@localhost", ["alice@localhost"], MESSAGE)
        with pytest.raises(QueueFull):
            queue.enqueue("a@localhost", ["alice@localhost"], MESSAGE + b"x" * (1 << 20))
        assert os.listdir(mount / "queue" / "tmp") == []
        assert os.listdir(mount / "queue" / "incoming") == [small]
        assert queue.load(small).size > 0
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_recover_returns_only_orphans(sandbox):
    """A message in active/ whose worker died goes back; one still held stays."""
    queue = Queue(sandbox.cfg)
    orphan = queue.enqueue("a@localhost", ["alice@localhost"], MESSAGE)
    held = queue.enqueue("a@localhost", ["bob@localhost"], MESSAGE)
    pid = os.fork()
    if pid == 0:                                   # a worker that claims, then dies
        queue.claim(orphan)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    claim = queue.claim(held)
    try:
        assert sorted(queue_files(sandbox, "active")) == sorted([orphan, held])
        assert queue.recover() == {orphan: "deferred"}
        assert queue_files(sandbox, "active") == [held]
        assert queue.load(orphan).state == "deferred"
        assert queue.load(orphan).crashes == 1
    finally:
        claim.done()


def test_a_message_whose_workers_keep_dying_is_held_until_released(sandbox):
    set_config(sandbox, "queue", "min_backoff", "0")
    queue = Queue(config.load(sandbox.conf))
    qid = queue.enqueue("a@localhost", ["alice@localhost"], MESSAGE)
    for crash in range(1, 4):
        pid = os.fork()
        if pid == 0:                               # a worker that claims, then dies
            queue.claim(qid, ("incoming", "deferred"))
            os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)
        assert queue.recover({qid: "delivery worker killed by signal 9"}) == {qid: "deferred" if crash < 3 else "hold"}
    envelope = queue.load(qid)
    assert (envelope.state, envelope.attempts, envelope.crashes) == ("hold", 3, 3)
    assert "held after 3 crashes" in envelope.held
    assert queue.claim(qid) is None                # never delivered while held
    queue.release(qid)
    envelope = queue.load(qid)
    assert (envelope.state, envelope.crashes, envelope.held) == ("deferred", 0, None)
