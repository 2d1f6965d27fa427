"""Remote recipients through the queue: sendmail on one host, SMTP to another, retries while it is down."""

import re
import time

import pytest

from mailsuite.queue import Queue
from mta_helpers import MESSAGE, queue_files, set_config, spool_messages, wait_for_messages
from smtp_helpers import Instance


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
    assert sandbox.run("sendmail", "-odi", "-i", "bob@example.test", input=MESSAGE).returncode == 0
    [qid] = queue_files(sandbox, "deferred")
    listing = sandbox.run("sendmail", "-bp").stdout.decode()
    assert qid in listing and "bob@example.test" in listing
    assert "Connection refused" in listing and "Errno" not in listing          # words, not Python's errno
    remote.start(runner=True)                                  # up again, on a fresh port: no race for the old one
    route(sandbox, remote.port)
    try:
        time.sleep(1.1)                                        # min_backoff
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
