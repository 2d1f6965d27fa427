"""sendmail -bD with its queue runner: dropped mail is picked up by inotify, SMTP mail is delivered."""

import signal
import smtplib
import socket
import subprocess
import time

import pytest

from mailsuite.runner import runner_active
from mta_helpers import MESSAGE, queue_files, sendmail_path, set_config, wait_for_messages


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(sandbox):
    port = free_port()
    set_config(sandbox, "smtp", "listen", f"127.0.0.1:{port}")
    proc = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-bD", "-q1m"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=sandbox.env)
    deadline = time.monotonic() + 20
    while not runner_active(sandbox.cfg) or not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("sendmail -bD did not start")
        time.sleep(0.05)
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_dropped_mail_is_picked_up_by_the_runner(sandbox, daemon):
    for _ in range(3):
        assert sandbox.run("sendmail", "-i", "alice", input=MESSAGE).returncode == 0
    assert len(wait_for_messages(sandbox.spool("alice"), 3)) == 3
    assert queue_files(sandbox, "incoming") == []


def test_smtp_mail_is_queued_then_delivered(sandbox, daemon):
    with smtplib.SMTP("127.0.0.1", daemon, timeout=20) as client:
        client.ehlo("client.test")
        client.sendmail("carol@example.org", ["bob@localhost", "alice@localhost"],
                        b"Subject: over smtp\r\n\r\nhello\r\n")
    assert len(wait_for_messages(sandbox.spool("bob"), 1)) == 1
    [msg] = wait_for_messages(sandbox.spool("alice"), 1)
    assert msg["Subject"] == "over smtp"
    assert msg["Received"]


def test_bs_speaks_smtp_on_stdio_to_swaks(sandbox):
    import shutil
    swaks = shutil.which("swaks")
    if not swaks:
        pytest.skip("swaks is not installed")
    result = subprocess.run([swaks, "--pipe", f"{sendmail_path()} -C {sandbox.conf} -bs",
                             "--from", "carol@example.org", "--to", "alice@localhost",
                             "--header", "Subject: swaks via -bs"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"250" in result.stdout
    assert sandbox.run("sendmail", "-q").returncode == 0
    [msg] = wait_for_messages(sandbox.spool("alice"), 1)
    assert msg["Subject"] == "swaks via -bs"


def test_mailq_by_name(sandbox, tmp_path):
    link = tmp_path / "mailq"
    link.symlink_to(sendmail_path())
    assert sandbox.run("sendmail", "-odq", "alice", input=MESSAGE).returncode == 0
    assert sandbox.run("sendmail", "-q").returncode == 0
    result = subprocess.run([str(link), "-C", sandbox.conf], capture_output=True)
    assert result.returncode == 0
    assert result.stdout == b"Mail queue is empty\n"
