"""pop3d against hostile or broken clients: the session stays consistent and the spool untouched."""

import logging
import mailbox
import socket
import threading

import pytest
from pop3lib import Pop3d, configure, deliver_to, message, wait_for

from mailsuite.pop3 import session as pop3
from mailsuite.server.connection import Connection, PeerGone


@pytest.fixture
def server(sandbox):
    deliver_to(sandbox, "alice", message("one"))
    deliver_to(sandbox, "alice", message("two"))
    running = Pop3d(sandbox, {"pop3": {"idle_timeout": "2s"}})
    yield running
    running.stop()


def converse(port, chunks):
    """Send each chunk, then read every reply until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    for chunk in chunks:
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    out = b""
    while data := sock.recv(65536):
        out += data
    sock.close()
    return out.split(b"\r\n")


def test_overlong_lines_are_refused_and_the_session_goes_on(server, sandbox):
    replies = converse(server.port, [b"USER alice\r\nPASS alice\r\n", b"NOOP " + b"A" * 200_000 + b"\r\n",
                                     b"DELE 1\r\nQUIT\r\n"])
    assert replies[3] == b"-ERR line too long"
    assert replies[4] == b"+OK message 1 deleted"
    assert replies[5].startswith(b"+OK bye")
    assert len(mailbox.mbox(sandbox.spool("alice"))) == 1


def test_overlong_sasl_response(server):
    replies = converse(server.port, [b"AUTH PLAIN\r\n", b"Q" * 100_000 + b"\r\n", b"QUIT\r\n"])
    assert replies[1:4] == [b"+ ", b"-ERR invalid SASL response", b"+OK bye"]


def test_nul_bytes_and_invalid_utf8(server):
    replies = converse(server.port, [b"US\0ER alice\r\n", b"USER \xff\xfe\r\nPASS \0\r\n", b"\0\0\0\r\n",
                                     b"USER alice\0\r\nPASS alice\r\nQUIT\r\n"])
    assert replies[1] == b"-ERR unknown command"
    assert replies[2] == b"+OK"
    assert replies[3] == b"-ERR [AUTH] invalid user name or password"
    assert replies[4] == b"-ERR unknown command"
    assert replies[6] == b"-ERR [AUTH] invalid user name or password"
    assert replies[7] == b"+OK bye"


def test_bare_lf_line_ends_are_accepted(server):
    replies = converse(server.port, [b"USER alice\nPASS alice\nSTAT\nQUIT\n"])
    assert replies[3].startswith(b"+OK 2 ") and replies[4].startswith(b"+OK bye")


def test_idle_client_is_disconnected(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    out = b""
    while data := sock.recv(1024):
        out += data
    sock.close()
    assert out.endswith(b"-ERR idle timeout; closing connection\r\n")


def test_client_vanishing_mid_retr_deletes_nothing(sandbox, server):
    deliver_to(sandbox, "alice", message("big", body=("y" * 500 + "\n") * 20_000))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(b"USER alice\r\nPASS alice\r\nDELE 1\r\nDELE 2\r\nRETR 3\r\n")
    sock.recv(1000)
    sock.close()
    assert wait_for(lambda: not server.sessions())
    after = server.client("alice")
    assert after.stat()[0] == 3
    after.quit()


def _in_process_session(sandbox, peer, settings=None):
    """A Session over a socketpair whose peer looks remote."""
    configure(sandbox, {"auth": {"failure_delay": "0"}, **(settings or {})})
    ours, theirs = socket.socketpair()
    conn = Connection(sock=ours, timeout=10)
    conn.peer = peer

    def run():
        try:
            pop3.serve(conn, sandbox.cfg, logging.getLogger("test-pop3"))
        except PeerGone:
            pass
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return theirs, thread


def test_plaintext_login_refused_from_a_remote_address(sandbox):
    client, thread = _in_process_session(sandbox, ("192.0.2.10", 5555))
    client.sendall(b"CAPA\r\nUSER alice\r\nAUTH PLAIN AGFsaWNlAGFsaWNl\r\nAUTH\r\nQUIT\r\n")
    client.shutdown(socket.SHUT_WR)
    out = b""
    while data := client.recv(4096):
        out += data
    thread.join(10)
    client.close()
    lines = out.split(b"\r\n")
    capa = lines[lines.index(b"+OK capability list follows"):lines.index(b".")]
    assert b"USER" not in capa and not any(line.startswith(b"SASL") for line in capa)
    assert lines.count(b"-ERR [AUTH] plaintext authentication needs TLS; use STLS") == 2
    assert b"+OK mechanisms follow\r\n.\r\n" in out


def test_plaintext_allowed_everywhere_when_configured(sandbox):
    deliver_to(sandbox, "alice", message("one"))
    client, thread = _in_process_session(sandbox, ("192.0.2.10", 5555), {"auth": {"allow_plaintext": "yes"}})
    client.sendall(b"USER alice\r\nPASS alice\r\nQUIT\r\n")
    client.shutdown(socket.SHUT_WR)
    out = b""
    while data := client.recv(4096):
        out += data
    thread.join(10)
    client.close()
    assert b"+OK alice has 1 message\r\n" in out
