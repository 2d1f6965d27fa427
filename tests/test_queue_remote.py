"""Remote recipients through the queue: sendmail on one host, SMTP to another, retries while it is down."""

import re
import time

import pytest
from mta_helpers import MESSAGE, queue_files, set_config, spool_messages, wait_for_messages
from smtp_helpers import Instance

from mailsuite.mta.queue import Queue


@pytest.fixture
def remote(tmp_path):
    host = Instance(tmp_path / "remote", domain="example.test")
    host.start(runner=True)
    yield host
    host.stop()


def route(sandbox, port):
    set_config(sandbox, "smtp", "static_routes", f"example.test=127.0.0.1:{port}")
    set_config(sandbox, "queue", "min_backoff", "1s")


def test_sendmail_to_a_remote_host(sandbox, remote):
    route(sandbox, remote.port)
    result = sandbox.run("sendmail", "-odi", "-i", "-f", "alice@localhost", "bob@example.test", input=MESSAGE)
    assert result.returncode == 0, result.stderr
    [msg] = wait_for_messages(remote.dir / "spool" / "bob", 1)
    assert msg["Subject"] == "hello"
    assert len(msg.get_all("Received")) == 2                  # our pickup, their SMTP server
    assert queue_files(sandbox, "deferred") == []


def test_host_down_defers_then_delivers(sandbox, tmp_path):
    remote = Instance(tmp_path / "remote", domain="example.test")
    remote.start(runner=True)
    port = remote.port
    remote.stop()                                              # the port is closed now
    route(sandbox, port)
    set_config(sandbox, "queue", "min_backoff", "1h")          # not due for an hour: sendmail -q tries it anyway
    assert sandbox.run("sendmail", "-odi", "-i", "bob@example.test", input=MESSAGE).returncode == 0
    [qid] = queue_files(sandbox, "deferred")
    listing = sandbox.run("sendmail", "-bp").stdout.decode()
    assert qid in listing and "bob@example.test" in listing
    assert "Connection refused" in listing and "Errno" not in listing          # words, not Python's errno
    remote.start(runner=True)                                  # up again, on a fresh port: no race for the old one
    route(sandbox, remote.port)
    try:
        time.sleep(1.1)                                        # so that delay= below is measurable
        assert sandbox.run("sendmail", "-q").returncode == 0
        assert len(wait_for_messages(remote.dir / "spool" / "bob", 1)) == 1
        assert queue_files(sandbox, "deferred") == []
        [line] = [line for line in (sandbox.dir / "state" / "maillog").read_text().splitlines()
                  if "status=sent" in line and "to=<bob@example.test>" in line]
        delay = float(re.search(r"delay=([\d.]+)", line).group(1))
        delays = [float(d) for d in re.search(r"delays=([\d./]+)", line).group(1).split("/")]
        assert delay >= 1.1                                        # since arrival, not this attempt (Postfix)
        assert len(delays) == 4 and delays[1] >= 1.0               # most of it waiting in the queue
        assert abs(sum(delays) - delay) < 0.05 + 0.01 * 4
    finally:
        remote.stop()


def test_remote_rejection_bounces_to_the_local_sender(sandbox, tmp_path):
    strict = Instance(tmp_path / "strict", domain="example.test", smtp={"relay_networks": ""})
    strict.start(runner=True)
    try:
        set_config(sandbox, "smtp", "static_routes", f"elsewhere.test=127.0.0.1:{strict.port}")
        sandbox.run("sendmail", "-odi", "-i", "-f", "alice@localhost", "carol@elsewhere.test", input=MESSAGE)
    finally:
        strict.stop()
    [bounce] = spool_messages(sandbox.spool("alice"))        # 554 5.7.1 relay denied: final
    assert bounce.get_content_type() == "multipart/report"
    text = bounce.as_string()
    assert "carol@elsewhere.test" in text and "Status: 5.7.1" in text
    assert Queue(sandbox.cfg).ids() == []


def test_queue_flush_wakes_the_running_daemon_at_once(tmp_path):
    """Deferred for an hour; `mailsuite queue flush` has the daemon's runner try it now, not at its timer."""
    import fcntl
    import smtplib
    import subprocess

    from conftest import program
    host = Instance(tmp_path / "host", queue={"min_backoff": "1h", "max_backoff": "1h", "run_interval": "1h",
                                              "mailbox_lock_wait": "0.2s"})
    spool = host.dir / "spool" / "alice"
    spool.touch()
    with open(spool, "r+b") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)                    # alice's mailbox is busy: the delivery defers
        host.start(runner=True)
        try:
            with smtplib.SMTP("127.0.0.1", host.port) as client:
                client.sendmail("bob@example.test", ["alice@example.test"], b"Subject: wake up\r\n\r\nx\r\n")
            wait_for_deferred(host)
            fcntl.lockf(held, fcntl.LOCK_UN)
            done = subprocess.run([program("mailsuite"), "-C", host.conf, "queue", "flush"], capture_output=True,
                                  timeout=60)
            assert done.returncode == 0, done.stderr
            assert len(wait_for_messages(spool, 1, timeout=30)) == 1        # seconds, not the hour of backoff
        finally:
            host.stop()


def wait_for_deferred(host, timeout=30):
    deadline = time.monotonic() + timeout
    while not list((host.dir / "queue" / "deferred").iterdir()):
        assert time.monotonic() < deadline, "the message was never deferred"
        time.sleep(0.05)


def test_bare_queue_command_lists_and_show_tells_one_message(sandbox, tmp_path):
    route(sandbox, 9)                                          # the discard port: nobody listens there
    assert sandbox.run("sendmail", "-odi", "-i", "-f", "alice@localhost", "bob@example.test",
                       input=MESSAGE).returncode == 0
    [qid] = queue_files(sandbox, "deferred")
    listing = sandbox.run("mailsuite", "queue")
    assert listing.returncode == 0 and qid.encode() in listing.stdout
    shown = sandbox.run("mailsuite", "queue", "show", qid)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert f"queue id:      {qid}" in text and "state:         deferred" in text
    assert "recipient:     bob@example.test  waiting (" in text and "Connection refused" in text
    assert "\nSubject: hello\n" in text
    missing = sandbox.run("mailsuite", "queue", "show", "0123456789ABCDEF")
    assert missing.returncode == 66 and missing.stderr.decode().count("\n") == 1
