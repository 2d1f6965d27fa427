"""Attacks on the queue of a system-mode MTA by local users: nobody stops everybody's mail.

Real users (useradd) write into the 1733 maildrop what they like, lock
their own spool, send mail that crashes a delivery worker, and run the
queue commands; root's daemon (`sendmail -bD`) or `sendmail -q` must go on
delivering everyone else's mail, and tell the operator once.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from procs import runner_of
from smtp_helpers import wait_for
from stage import stage

pytestmark = pytest.mark.root


def drop_file(mta, user, name, request, message=b"Subject: hostile\n\nbody\n"):
    """USER writes NAME into the maildrop with their own hands, as sendmail would not."""
    data = b"mailsuite-drop 1\n" + json.dumps(request).encode() + b"\n" + message
    done = user.run([stage().python, "-c", "import sys; open(sys.argv[1], 'xb').write(sys.stdin.buffer.read())",
                     str(mta.maildrop / name)], input=data)
    assert done.returncode == 0, done.stderr


def hostile_requests(victim):
    return {
        "0000000000000001": {"recipients": [victim], "full_name": 123},
        "0000000000000002": {"recipients": [victim], "dsn": "notify"},
        "0000000000000003": {"recipients": [victim], "dsn": {"notify": 5}},
        "0000000000000004": {"recipients": [victim, ["nested"]]},
        "0000000000000005": {"recipients": [victim], "sender": {"a": 1}},
        "0000000000000006": {"recipients": [victim], "dsn": {"ret": ["FULL"]}},
        "0000000000000007": [victim],
        "0000000000000008": {"recipients": [victim], "smuggled": "x"},
    }


def runner_pid(mta):
    """The daemon's queue runner."""
    return runner_of(mta.daemon.pid, mta.queue_dir)


def test_hostile_drop_files_stop_nobody_and_the_master_keeps_its_runner(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    mta.start_daemon()
    first_runner = wait_for(lambda: runner_pid(mta))
    hostile = hostile_requests(b.name)
    for name, request in hostile.items():
        drop_file(mta, a, name, request)
    assert mta.sendmail(a, b.name, input=b"Subject: good one\n\nhello\n").returncode == 0
    wait_for(lambda: [m["Subject"] for m in mta.messages(b)] == ["good one"])
    assert sorted(mta.queue_entries("corrupt")) == sorted(hostile)
    log = mta.daemon_log()
    assert "queue runner failed" not in log and "Traceback" not in log
    for name in hostile:
        assert sum(name in line and "corrupt" in line for line in log.splitlines()) == 1
    assert runner_pid(mta) == first_runner

    os.kill(first_runner, signal.SIGKILL)          # whatever kills it, the master starts another
    second = wait_for(lambda: (pid := runner_pid(mta)) not in (None, first_runner) and pid)
    assert mta.sendmail(a, b.name, input=b"Subject: after the kill\n\nhello\n").returncode == 0
    wait_for(lambda: len(mta.messages(b)) == 2)
    assert runner_pid(mta) == second
    assert "queue runner" in mta.daemon_log() and "killed by signal 9" in mta.daemon_log()


def test_sendmail_q_survives_a_hostile_drop_file(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    drop_file(mta, a, "0000000000000001", {"recipients": [b.name], "full_name": 123})
    assert mta.sendmail(a, b.name, input=b"Subject: good one\n\nhello\n").returncode == 0
    log = mta.run_queue()
    assert [m["Subject"] for m in mta.messages(b)] == ["good one"]
    assert mta.queue_entries("corrupt") == ["0000000000000001"]
    assert "Traceback" not in log


def test_special_files_in_the_maildrop_are_set_aside_once(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    script = (f"import os; d = {str(mta.maildrop)!r}\n"
              "os.symlink('/etc/shadow', d + '/000000000000000A')\n"
              "os.mkfifo(d + '/000000000000000B')\n"
              "os.mkdir(d + '/000000000000000C')\n")
    assert a.run([stage().python, "-c", script]).returncode == 0
    assert mta.sendmail(a, b.name).returncode == 0
    first = mta.run_queue()
    second = mta.run_queue()
    for name in ("000000000000000A", "000000000000000B", "000000000000000C"):
        assert first.count(name) == 1, first
        assert name not in second
        assert not os.path.lexists(mta.maildrop / name)
    assert len(mta.messages(b)) == 1


def test_a_message_that_crashes_its_worker_is_held_after_a_few_crashes(system_mta, real_users):
    """Here the crash is made by the runner's own delivery code (patched); the message is secA's."""
    mta = system_mta
    a, b, c = real_users.add("secA"), real_users.add("secB"), real_users.add("secC")
    crashing = ("import os, signal, sys\n"
                "from mailsuite.core import cli\nfrom mailsuite.mta import agents, sendmail\n"
                "real = agents.MailboxDeliveries.add\n"
                "def add(self, owner, user, *args, **kwargs):\n"
                f"    if user.name == {b.name!r}:\n"
                "        os.kill(os.getpid(), signal.SIGSEGV)\n"
                "    return real(self, owner, user, *args, **kwargs)\n"
                "agents.MailboxDeliveries.add = add\n"
                "cli.run(sendmail.main, ['sendmail'] + sys.argv[1:])\n")
    mta.start_daemon(argv=[sys.executable, "-c", crashing, "-C", str(mta.conf), "-bD"])
    assert mta.sendmail(a, b.name, input=b"Subject: poison\n\nx\n").returncode == 0
    assert mta.sendmail(a, c.name, input=b"Subject: fine\n\nx\n").returncode == 0
    wait_for(lambda: mta.messages(c))                 # mail for others flows meanwhile
    [qid] = wait_for(lambda: mta.queue_entries("hold"), timeout=60)
    listing = mta.root("sendmail", "-bp").stdout.decode()
    assert f"{qid}!" in listing and "crash" in listing and b.name in listing
    log = mta.daemon_log()
    assert log.count("killed by signal 11") == 3           # hold_after_crashes, then never again
    assert mta.messages(b) == []


def test_a_user_holding_their_own_spool_locked_stalls_nobody_else(system_mta, real_users):
    mta = system_mta                                   # lock_timeout = 60s, 4 workers
    a, b = real_users.add("secA"), real_users.add("secB")
    assert mta.sendmail(b, a.name, input=b"Subject: first\n\nx\n").returncode == 0
    mta.run_queue()                                    # secA's spool exists now
    holder = a.run_background([stage().python, "-c",
                               "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                               "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True)\n"
                               "time.sleep(600)\n", str(mta.spool(a))])
    try:
        assert holder.stdout.readline() == b"locked\n"
        for n in range(8):
            assert mta.sendmail(b, a.name, input=f"Subject: to the locked box {n}\n\nx\n".encode()).returncode == 0
        assert mta.sendmail(a, b.name, input=b"Subject: for secB\n\nx\n").returncode == 0
        # each attempt on the locked mailbox takes mailbox_lock_wait, not lock_timeout: a bounded run
        done = mta.root("sendmail", "-q", timeout=45)
        assert done.returncode == 0
        assert [m["Subject"] for m in mta.messages(b)] == ["for secB"]
        assert len(mta.queue_entries("deferred")) == 8
        listing = mta.root("sendmail", "-bp").stdout.decode()
        assert "still locked" in listing
    finally:
        holder.kill()
        holder.wait()
    assert len(mta.messages(a)) == 1


@pytest.mark.parametrize("argv", [
    ["mailq"], ["sendmail", "-bp"], ["sendmail", "-q"], ["sendmail", "-qIABCDEF01"], ["sendmail", "-q5m"],
    ["mailsuite", "queue", "list"], ["mailsuite", "queue", "flush"], ["mailsuite", "queue", "hold", "ABCDEF0123"],
])
def test_queue_commands_run_by_a_user_say_no_in_one_line(system_mta, real_users, argv):
    a = real_users.add("secA")
    assert system_mta.sendmail(a, a.name).returncode == 0
    system_mta.run_queue()
    done = system_mta.run_as(a, *argv)
    assert done.returncode == os.EX_NOPERM, done
    assert b"Traceback" not in done.stderr
    [line] = done.stderr.decode().splitlines()
    assert "permission denied" in line.lower() and "queue" in line


@pytest.mark.peers("strace")
def test_a_users_sendmail_says_0_only_once_its_rename_is_durable(system_mta, real_users, tmp_path):
    """The user may not open the 1733 maildrop to fsync it: the file system is synced instead."""
    mta = system_mta
    a = real_users.add("secA")
    trace = tmp_path / "trace"
    done = subprocess.run(["strace", "-f", "-qq", "-o", str(trace), "-e", "trace=rename,renameat,renameat2,syncfs,"
                           "fsync,exit_group", "-u", a.name, stage().program("sendmail"), "-C", str(mta.conf),
                           a.name], input=b"Subject: durable\n\nx\n", capture_output=True, timeout=60,
                          env=dict(os.environ, HOME=str(a.home), USER=a.name))
    assert done.returncode == 0, done.stderr
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines()]
    [renamed] = [n for n, call in enumerate(calls) if call.startswith("rename") and ".tmp" in call and "= 0" in call]
    synced = [n for n, call in enumerate(calls) if call.startswith("syncfs(") and call.endswith("= 0")]
    exited = [n for n, call in enumerate(calls) if call.startswith("exit_group(0)")]
    assert synced and renamed < synced[0] < exited[-1]


def test_a_sendmail_killed_before_its_commit_leaves_nothing_behind(system_mta, real_users):
    mta = system_mta
    a = real_users.add("secA")
    sendmail = [stage().program("sendmail"), "-C", str(mta.conf), a.name]
    writing = a.run_background(sendmail, stdin=subprocess.PIPE)          # waits for the rest of its message
    dead = a.run_background(sendmail, stdin=subprocess.PIPE)
    try:
        wait_for(lambda: len(os.listdir(mta.maildrop)) == 2)
        dead.kill()
        dead.wait()
        for name in os.listdir(mta.maildrop):                 # both older than any grace period
            os.utime(mta.maildrop / name, (time.time() - 3600, time.time() - 3600))
        log = mta.run_queue()
        [left] = os.listdir(mta.maildrop)                     # the live writer's, still locked
        assert log.count("removed") == 1 and left not in log
        assert mta.run_queue().count("removed") == 0
    finally:
        writing.kill()
        writing.wait()
        dead.kill()
        dead.wait()
    assert mta.messages(a) == []


def test_files_that_dead_writers_left_in_queue_tmp_are_removed(system_mta):
    import fcntl
    mta = system_mta
    tmp = mta.queue_dir / "tmp"
    tmp.mkdir(mode=0o700)
    orphan, live = tmp / "6617000000000000.4242", tmp / "6617000000000001.4243"
    orphan.write_bytes(b"half a message")
    live.write_bytes(b"being written")
    for path in (orphan, live):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    with open(live, "rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)                    # its writer is alive
        log = mta.run_queue()
        assert sorted(os.listdir(tmp)) == [live.name]
    assert "removed 1 file(s) left in tmp/" in log
