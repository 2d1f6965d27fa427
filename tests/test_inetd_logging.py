"""No program run by inetd writes log lines, errors or tracebacks into the client's connection.

inetd hands the connection over as stdin, stdout *and* stderr.  With no
syslog socket (a container, a chroot, syslogd down) the log falls back to
stderr, which is then the client: imapd used to send its `login:` lines to
the client mid-protocol (issue 10, item 9).  Every program that serves a
connection on stdin/stdout runs here on a socket that is all three, with
`log_socket` naming a missing path and every log level on.
"""

import socket
import subprocess

import pytest
from conftest import program
from pop3lib import configure

NO_SYSLOG = {"mailsuite": {"log_socket": "/nonexistent/log", "log_level": "debug"},
             "auth": {"failure_delay": "0"}}

# program, arguments, what the client sends (a session that makes the program log)
SESSIONS = {
    "pop3d": (["pop3d"], b"USER nosuchuser\r\nPASS wrong\r\nUSER alice\r\nPASS alice\r\nQUIT\r\n"),
    "imapd": (["imapd"], b"a LOGIN nosuchuser wrong\r\nb LOGIN alice alice\r\nc LOGOUT\r\n"),
    "imapd --preauth": (["imapd", "--preauth", "alice"], b"a SELECT INBOX\r\nb LOGOUT\r\n"),
    "sendmail -bs": (["sendmail", "-bs"], b"EHLO client.example\r\nMAIL FROM:<x@y>\r\nQUIT\r\n"),
    "mail.local -l": (["mail.local", "-l"], b"LHLO client.example\r\nMAIL FROM:<x@y>\r\n"
                                            b"RCPT TO:<nosuchuser>\r\nQUIT\r\n"),
}


def run_on_socket(argv, conf, request, timeout=30):
    """Run ARGV with one socket as its stdin, stdout and stderr; everything it sent back."""
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen([program(argv[0]), "-C", conf, *argv[1:]], stdin=theirs, stdout=theirs,
                                stderr=theirs)
        theirs.close()
        ours.sendall(request)
        ours.settimeout(timeout)
        received = b""
        try:
            while chunk := ours.recv(65536):
                received += chunk
        finally:
            proc.wait(timeout)
    return received


def log_lines(received, name):
    """Lines that are log output, not protocol: `NAME[PID]:`, a traceback, `NAME: message`."""
    return [line for line in received.decode("utf-8", "replace").splitlines()
            if f"{name}[" in line or "Traceback" in line or line.startswith(f"{name}:")]


@pytest.mark.parametrize("session", SESSIONS)
def test_no_log_line_reaches_the_client(sandbox, session):
    configure(sandbox, NO_SYSLOG)
    argv, request = SESSIONS[session]
    received = run_on_socket(argv, sandbox.conf, request)
    assert received, "the program said nothing at all"
    assert log_lines(received, argv[0]) == []
    for name in ("imapd", "pop3d", "smtpd", "sendmail", "mail.local"):
        assert f"{name}[".encode() not in received


@pytest.mark.parametrize("name", ["pop3d", "imapd"])
def test_a_configuration_error_stays_off_the_connection(sandbox, name):
    with open(sandbox.conf, "a") as f:
        f.write("\n[mailsuite]\nno_such_key = 1\n")
    received = run_on_socket([name], sandbox.conf, b"")
    assert received == b""
