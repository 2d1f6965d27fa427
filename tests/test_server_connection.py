"""mailsuite.server.Connection: bounded lines, timeouts, vanished peers, STARTTLS."""

import os
import socket
import ssl
import threading
import time

import pytest
from serverlib import client_tls_context, make_certificate, write_config

from mailsuite.server.connection import (
    DISCARD_AT_LEAST,
    Connection,
    IdleTimeout,
    Limits,
    LineFlood,
    LineTooLong,
    PeerGone,
    TooManyCommands,
)
from mailsuite.server.tls import tls_context


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    conn = Connection(sock=ours, timeout=5)
    yield conn, theirs
    conn.close()
    theirs.close()


def test_readline_returns_lines_with_their_ends(pair):
    conn, client = pair
    client.sendall(b"USER alice\r\nPASS x\nNOOP")
    assert conn.readline(100) == b"USER alice\r\n"
    assert conn.readline(100) == b"PASS x\n"
    client.sendall(b"\r\n")
    assert conn.readline(100) == b"NOOP\r\n"


def test_overlong_line_is_discarded_up_to_its_end(pair):
    conn, client = pair
    sender = threading.Thread(target=client.sendall, args=(b"X" * 30_000 + b"\r\nNOOP\r\n",))
    sender.start()
    with pytest.raises(LineTooLong):
        conn.readline(512)
    assert conn.readline(512) == b"NOOP\r\n"
    sender.join()


def test_a_line_that_never_ends_is_not_read_for_ever(pair):
    conn, client = pair

    def flood():
        try:
            client.sendall(b"X" * (DISCARD_AT_LEAST + 100_000))
        except OSError:                 # the server stopped reading and closed: the point of the test
            pass
    sender = threading.Thread(target=flood)
    sender.start()
    with pytest.raises(LineFlood):
        conn.readline(512)
    conn.close()                        # what the server does next; the rest may never fit the socket's buffer
    sender.join(timeout=30)
    assert not sender.is_alive()


def test_the_deadline_is_per_line_not_per_byte(pair):
    conn, client = pair
    conn.set_timeout(0.5)
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.05):
            client.send(b"x")

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        with pytest.raises(IdleTimeout):
            conn.readline(10_000)
    finally:
        stop.set()
        sender.join()


def test_a_caller_deadline_is_kept_inside_a_line(pair):
    conn, client = pair
    client.sendall(b"no end yet")
    with pytest.raises(IdleTimeout):
        conn.readline(100, deadline=time.monotonic() + 0.2)


def test_login_phase_budget_and_deadline(pair):
    conn, client = pair
    conn.start_login_phase(Limits(login_timeout=60, login_commands=2))
    client.sendall(b"ONE\r\nTWO\r\nTHREE\r\n")
    assert conn.readline(100) == b"ONE\r\n"
    assert conn.readline(100) == b"TWO\r\n"
    with pytest.raises(TooManyCommands):
        conn.readline(100)
    conn.end_login_phase()
    assert conn.readline(100) == b"THREE\r\n"
    conn.start_login_phase(Limits(login_timeout=0.2))
    with pytest.raises(IdleTimeout):
        conn.readline(100)


def test_line_exactly_at_the_limit_passes(pair):
    conn, client = pair
    client.sendall(b"A" * 8 + b"\r\n" + b"B" * 9 + b"\r\n")
    assert conn.readline(10) == b"A" * 8 + b"\r\n"
    with pytest.raises(LineTooLong):
        conn.readline(10)


def test_read_exact_for_literals(pair):
    conn, client = pair
    client.sendall(b"{5}\r\nhello rest\r\n")
    assert conn.readline(100) == b"{5}\r\n"
    assert conn.read_exact(5) == b"hello"
    assert conn.readline(100) == b" rest\r\n"


def test_peer_gone_on_close(pair):
    conn, client = pair
    client.sendall(b"partial")
    client.close()
    with pytest.raises(PeerGone):
        conn.readline(100)


def test_idle_timeout(pair):
    conn, _client = pair
    conn.set_timeout(0.2)
    with pytest.raises(IdleTimeout):
        conn.readline(100)


def test_writes_are_buffered_and_flushed_before_reading(pair):
    conn, client = pair
    conn.write(b"+OK one\r\n")
    conn.write(b"+OK two\r\n")
    client.settimeout(0.2)
    with pytest.raises(socket.timeout):
        client.recv(100)
    client.sendall(b"NEXT\r\n")
    assert conn.readline(100) == b"NEXT\r\n"
    client.settimeout(5)
    assert client.recv(100) == b"+OK one\r\n+OK two\r\n"


def test_write_to_vanished_peer_is_peer_gone(pair):
    conn, client = pair
    client.close()
    with pytest.raises(PeerGone):
        for _ in range(100):
            conn.write(b"x" * 65536)
            conn.flush()


def test_pipes_work_and_count_as_local():
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    conn = Connection(rfd=in_r, wfd=out_w, timeout=5)
    assert conn.peer is None and conn.is_loopback() and not conn.is_tls
    os.write(in_w, b"HELLO\r\n")
    assert conn.readline(100) == b"HELLO\r\n"
    conn.write(b"+OK\r\n")
    conn.flush()
    assert os.read(out_r, 100) == b"+OK\r\n"
    os.close(in_w)
    with pytest.raises(PeerGone):
        conn.readline(100)
    with pytest.raises(OSError):
        conn.starttls(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    for fd in (in_r, out_r, out_w):
        os.close(fd)


def test_tcp_peer_and_loopback():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    conn = Connection(sock=server_side)
    assert conn.peer == client.getsockname()
    assert conn.is_loopback()
    conn.close()
    client.close()
    listener.close()


def test_loopback_classification():
    conn = Connection(rfd=0, wfd=1)
    for address, expected in [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True),
                              ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("::ffff:192.0.2.1", False),
                              ("2001:db8::1", False)]:
        conn.peer = (address, 1234)
        assert conn.is_loopback() is expected, address


def test_starttls_drops_plaintext_sent_ahead(tmp_path, pair):
    cert, key = make_certificate(tmp_path)
    _, cfg = write_config(tmp_path, {"tls": {"cert_file": cert, "key_file": key}})
    conn, client = pair
    result = {}

    def client_side():
        client.sendall(b"STLS\r\nINJECTED\r\n")
        assert client.recv(100) == b"+OK go\r\n"
        tls = client_tls_context(cert).wrap_socket(client, server_hostname="localhost")
        tls.sendall(b"AFTER\r\n")
        result["reply"] = tls.recv(100)
        tls.close()

    thread = threading.Thread(target=client_side)
    thread.start()
    assert conn.readline(100) == b"STLS\r\n"
    conn.write(b"+OK go\r\n")
    conn.starttls(tls_context(cfg, "pop3"))
    assert conn.is_tls
    assert conn.readline(100) == b"AFTER\r\n"
    conn.write(b"+OK secure\r\n")
    conn.flush()
    thread.join(10)
    assert result["reply"] == b"+OK secure\r\n"


def test_no_tls_context_without_certificate(tmp_path):
    _, cfg = write_config(tmp_path)
    assert tls_context(cfg, "pop3") is None


def test_unreadable_certificate_is_a_config_error(tmp_path):
    from mailsuite.core.config import ConfigError
    _, cfg = write_config(tmp_path, {"tls": {"cert_file": str(tmp_path / "missing.pem")}})
    with pytest.raises(ConfigError, match="missing.pem"):
        tls_context(cfg)
