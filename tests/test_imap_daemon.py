"""imapd -d: the shared forking listener, STARTTLS, implicit TLS, LOGINDISABLED."""

import imaplib
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from serverlib import client_tls_context, make_certificate, stop, write_config

from mailsuite.core import log
from mailsuite.imap.session import Session
from mailsuite.server import connection

IMAPD = str(Path(sys.executable).parent / "imapd")


@pytest.fixture
def daemon(tmp_path):
    cert, key = make_certificate(tmp_path)
    conf, cfg = write_config(tmp_path, {
        "imap": {"listen": "127.0.0.1:0", "listen_tls": "127.0.0.1:0"},
        "tls": {"cert_file": cert, "key_file": key},
    })
    (tmp_path / "spool" / "alice").write_bytes(b"From x Mon Jan  2 10:00:00 2023\nSubject: one\n\nbody\n\n")
    proc = subprocess.Popen([IMAPD, "-d", "-C", conf], stderr=subprocess.PIPE, text=True)
    try:
        ports = []
        for line in proc.stderr:
            ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)]
            if len(ports) == 2:
                break
        assert len(ports) == 2, "imapd -d did not report its ports"
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield ports, cert
    finally:
        stop(proc)


def test_plain_then_starttls(daemon):
    (port, _), cert = daemon
    imap = imaplib.IMAP4("127.0.0.1", port)
    assert "STARTTLS" in imap.capabilities
    imap.starttls(client_tls_context(cert))
    assert "STARTTLS" not in imap.capabilities
    assert imap.login("alice", "alice")[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"1"])
    imap.logout()


def test_implicit_tls(daemon):
    (_, tls_port), cert = daemon
    imap = imaplib.IMAP4_SSL("127.0.0.1", tls_port, ssl_context=client_tls_context(cert))
    assert imap.login("alice", "alice")[0] == "OK"
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])") if imap.select("INBOX")[0] == "OK" else (None, None)
    assert data[0][1] == b"Subject: one\r\n\r\n"
    imap.logout()


def test_bad_password_and_several_clients(daemon):
    (port, _), _ = daemon
    clients = [imaplib.IMAP4("127.0.0.1", port) for _ in range(3)]
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        clients[0].login("alice", "wrong")
    for c in clients[1:]:
        assert c.login("bob", "bob")[0] == "OK"
        c.logout()
    clients[0].logout()


def test_logindisabled_without_tls_from_afar(tmp_path):
    """A non-local client without TLS sees LOGINDISABLED and cannot LOGIN."""
    conf, cfg = write_config(tmp_path)
    ours, theirs = socket.socketpair()
    conn = connection.Connection(sock=ours, timeout=10)
    conn.is_loopback = lambda: False
    session = Session(conn, cfg, log.setup(cfg, "imapd-test"))
    thread = threading.Thread(target=lambda: _run(session, conn))
    thread.start()
    f = theirs.makefile("rwb")
    greeting = f.readline()
    assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    f.write(b"a LOGIN alice alice\r\nb AUTHENTICATE PLAIN AGFsaWNlAGFsaWNl\r\nc LOGOUT\r\n")
    f.flush()
    replies = [f.readline() for _ in range(4)]
    assert replies[0].startswith(b"a NO [PRIVACYREQUIRED]")
    assert replies[1].startswith(b"b NO [PRIVACYREQUIRED]")
    thread.join(10)
    theirs.close()


def _run(session, conn):
    try:
        session.run()
    finally:
        conn.close()
