"""Hostile clients: SMTP smuggling, pipelining abuse, early talkers, timeouts, STARTTLS injection."""

import smtplib
import socket
import ssl

import pytest
from serverlib import make_certificate
from smtp_helpers import S250_OK, S354_START_DATA, S421_CLOSING, S550_REJECTED, S554_FAILED, Instance

SMUGGLED = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"From: admin@example.test\r\nSubject: smuggled\r\n\r\nspoofed\r\n")

# The end-of-data look-alikes of the CVE-2023-51764 / CVE-2023-51765 / CVE-2023-51766 family.
FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CR": b"\r.\r",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CRLF.NULCRLF": b"\r\n.\0\r\n",
}


def start_transaction(client):
    assert client.reply()[0] == 220
    client.command("EHLO client.example")
    assert client.command("MAIL FROM:<alice@example.test>")[0] == S250_OK
    assert client.command("RCPT TO:<bob@example.test>")[0] == S250_OK
    assert client.command("DATA")[0] == S354_START_DATA


@pytest.fixture
def host(tmp_path):
    instance = Instance(tmp_path / "host")
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.parametrize("name", FAKE_ENDS)
def test_smuggling_is_rejected_and_nothing_is_queued(host, name):
    client = host.connect()
    start_transaction(client)
    client.send(b"Subject: first\r\n\r\nlegit" + FAKE_ENDS[name] + SMUGGLED + b"\r\n.\r\n")
    code, lines = client.reply()
    assert code == S550_REJECTED, lines
    # the smuggled commands were data: the next reply answers our NOOP
    assert client.command("NOOP")[0] == S250_OK
    assert host.queued() == []


@pytest.mark.parametrize("name", ["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR"])
def test_normalising_mode_keeps_the_smuggled_text_inside_the_one_message(tmp_path, name):
    host = Instance(tmp_path / "lenient", smtp={"reject_bare_newlines": "no"}).start()
    try:
        client = host.connect()
        start_transaction(client)
        client.send(b"Subject: first\r\n\r\nlegit" + FAKE_ENDS[name] + SMUGGLED + b"\r\n.\r\n")
        assert client.reply()[0] == S250_OK
        assert client.command("NOOP")[0] == S250_OK
        [(envelope, data)] = host.queued()
        assert envelope.sender == "alice@example.test"
        assert b"smuggled" in data                        # it stayed message text
        client.close()
    finally:
        host.stop()


def test_data_pipelined_ahead_of_354_is_a_synchronisation_error(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                b"Subject: eager\r\n\r\nbody\r\n.\r\n")
    assert client.reply()[0] == S250_OK
    assert client.reply()[0] == S250_OK
    code, lines = client.reply()
    assert code == S554_FAILED and "5.5.0" in lines[0]
    assert client.closed()
    assert host.queued() == []


def test_proper_pipelining_is_answered_in_order(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                b"RCPT TO:<nobody@elsewhere.invalid>\r\nDATA\r\n")
    assert [client.reply()[0] for _ in range(4)] == [S250_OK, S250_OK, S250_OK, S354_START_DATA]
    client.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert client.reply()[0] == S250_OK
    assert client.reply()[0] == 221
    [(envelope, _)] = host.queued()
    assert envelope.recipients == ["bob@example.test", "nobody@elsewhere.invalid"]


def test_pipelining_after_helo_is_refused(host):
    client = host.connect()
    client.reply()
    client.command("HELO client.example")
    client.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n")
    code, lines = client.reply()
    assert code == S554_FAILED
    assert client.closed()


def test_client_talking_before_the_greeting_is_dropped(tmp_path):
    host = Instance(tmp_path / "pregreet", smtp={"greeting_delay": "1s"}).start()
    try:
        sock = socket.create_connection(("127.0.0.1", host.port), timeout=10)
        sock.sendall(b"EHLO spammer.example\r\n")
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:       # closed with our EHLO unread: the reply may be lost
            pass
        assert data == b"" or data.startswith(b"554 5.5.0")
        assert b"220" not in data
        sock.close()
        # a patient client is served
        with smtplib.SMTP("127.0.0.1", host.port) as client:
            assert client.noop()[0] == S250_OK
    finally:
        host.stop()


def test_idle_client_is_timed_out(tmp_path):
    host = Instance(tmp_path / "idle", smtp={"command_timeout": "1s"}).start()
    try:
        client = host.connect()
        assert client.reply()[0] == 220
        code, lines = client.reply()                      # we say nothing
        assert code == S421_CLOSING and "4.4.2" in lines[0]
        assert client.closed()
    finally:
        host.stop()


def test_connections_beyond_max_children_get_421(tmp_path):
    host = Instance(tmp_path / "busy", smtp={"max_children": "2"}).start()
    try:
        first, second = host.connect(), host.connect()
        assert first.reply()[0] == 220 and second.reply()[0] == 220
        third = host.connect()
        code, lines = third.reply()
        assert code == S421_CLOSING and "4.7.0" in lines[0]
        for client in (first, second, third):
            client.close()
    finally:
        host.stop()


@pytest.fixture
def tls_host(tmp_path):
    cert, key = make_certificate(tmp_path)
    instance = Instance(tmp_path / "tls", smtp={"tls_cert_file": cert, "tls_key_file": key,
                                                "relay_networks": "192.0.2.0/24"})
    instance.start()
    yield instance
    instance.stop()


def _client_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_starttls_then_auth_then_relay(tls_host):
    with smtplib.SMTP("127.0.0.1", tls_host.port) as client:
        client.ehlo("client.example")
        assert client.has_extn("starttls")
        client.starttls(context=_client_context())
        client.ehlo("client.example")
        assert not client.has_extn("starttls")
        assert "PLAIN" in client.esmtp_features["auth"]
        client.login("alice", "alice")
        client.sendmail("alice@example.test", ["friend@elsewhere.test"], b"Subject: tls\r\n\r\nsecret\r\n")
    [(envelope, data)] = tls_host.queued()
    assert b"with ESMTPSA" in data
    assert envelope.recipients == ["friend@elsewhere.test"]


def test_plaintext_sent_with_starttls_is_discarded(tls_host):
    """CVE-2011-0411: commands injected before the handshake must not run inside TLS."""
    client = tls_host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.send(b"STARTTLS\r\nRSET\r\n")
    assert client.reply()[0] == 220
    assert client.buffer == b""
    client.sock = _client_context().wrap_socket(client.sock)
    code, lines = client.command("EHLO client.example")
    assert code == S250_OK and lines[0].startswith("250-")   # the EHLO reply, not one for RSET
    client.close()


def test_starttls_resets_the_session_state(tls_host):
    client = tls_host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.command("STARTTLS")
    client.sock = _client_context().wrap_socket(client.sock)
    assert client.command("MAIL FROM:<alice@example.test>")[0] == 503    # EHLO again first
    client.close()
