"""The daemon with swaks as the client, and what a killed session leaves behind."""

import os
import signal
import subprocess
from pathlib import Path

import peers
import pytest
from serverlib import make_certificate
from smtp_helpers import S250_OK, S354_START_DATA, Instance, wait_for

needs_swaks = peers.needs("swaks")
FEATURES = {"--tls": "TLS", "--auth": "Basic AUTH"}


@pytest.fixture
def host(tmp_path):
    cert, key = make_certificate(tmp_path)
    instance = Instance(tmp_path / "host", smtp={"tls_cert_file": cert, "tls_key_file": key})
    instance.start()
    yield instance
    instance.stop()


def run_swaks(host, *args):
    """swaks against HOST; the features its options use are checked first (peers.require_swaks)."""
    swaks = peers.require_swaks(*(FEATURES[a] for a in args if a in FEATURES))
    return subprocess.run([swaks, "--server", f"127.0.0.1:{host.port}", "--helo", "client.example",
                           "--from", "alice@example.test", "--to", "bob@example.test", "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60)


@needs_swaks
@pytest.mark.parametrize("options", [[], ["--pipeline"], ["--tls"], ["--tls", "--pipeline"],
                                     ["--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice"],
                                     ["--auth", "LOGIN", "--auth-user", "bob", "--auth-password", "bob"],
                                     ["--body", "Gr\u00fc\u00dfe, 8-bit text"]],
                         ids=["plain", "pipeline", "tls", "tls-pipeline", "tls-auth-plain", "auth-login", "8bit"])
def test_swaks_delivers(host, options):
    result = run_swaks(host, *options)
    assert result.returncode == 0, result.stdout + result.stderr
    [(envelope, data)] = host.queued()
    assert envelope.recipients == ["bob@example.test"]
    assert b"Received: from client.example" in data


@needs_swaks
def test_swaks_wrong_password_is_refused(host):
    result = run_swaks(host, "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "nope")
    assert result.returncode != 0
    assert "535 5.7.8" in result.stdout
    assert host.queued() == []


@needs_swaks
def test_swaks_bare_lf_body_is_refused(host):
    result = run_swaks(host, "--data", "Subject: lf\n\nline one\n.\nMAIL FROM:<x@y>\n", "--no-data-fixup")
    assert "550 5.5.2" in result.stdout or result.returncode != 0
    assert host.queued() == []


def _session_children(master_pid):
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def test_sigkill_mid_data_gives_no_250_and_queues_nothing(host):
    client = host.connect()
    assert client.reply()[0] == 220
    client.command("EHLO client.example")
    client.command("MAIL FROM:<alice@example.test>")
    client.command("RCPT TO:<bob@example.test>")
    assert client.command("DATA")[0] == S354_START_DATA
    client.send(b"Subject: interrupted\r\n\r\nfirst half of the message\r\n")
    [child] = wait_for(lambda: _session_children(host.process.pid))
    os.kill(child, signal.SIGKILL)
    code, _ = client.reply()
    assert code is None                                   # connection gone, no 250
    client.close()
    assert host.queued() == []
    tmp = host.dir / "queue" / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == []      # not even a partial file
    # the client tries again: exactly one copy
    retry = host.connect()
    retry.reply()
    retry.command("EHLO client.example")
    retry.command("MAIL FROM:<alice@example.test>")
    retry.command("RCPT TO:<bob@example.test>")
    retry.command("DATA")
    retry.send(b"Subject: interrupted\r\n\r\nwhole message\r\n.\r\n")
    assert retry.reply()[0] == S250_OK
    retry.close()
    assert len(host.queued()) == 1
