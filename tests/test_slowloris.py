"""Slow and endless clients cannot hold a session slot (issue 10, item 10).

The attacks, against `sendmail -bD`, `pop3d -d` and `imapd -d` alike (the
limits live once, in the shared server harness):
- one byte at a time, never finishing the line: the idle timeout used to
  restart on every byte, so such a client was never dropped;
- complete but useless commands before login, one just inside the timeout
  each: the whole login phase now has one deadline, and a command budget;
- a line with no LF at all, as fast as the network goes: read for ever,
  tens of GB, before; now cut off after a bounded discard;
- SMTP DATA trickled with no LF: data_timeout now holds inside the line;
- many sessions from one address: limited per address in -d / -bd mode.
Every wait is bounded; no test asserts a clock figure.
"""

import socket
import time

import pytest
from conftest import program
from pop3lib import configure
from procs import start_listener, stop_listener

PROTOCOLS = {
    # section, program and flag, its line timeout key, a harmless command and its answer,
    # what a refused client is told
    "smtp": ("smtp", ["sendmail", "-bD"], "command_timeout", b"NOOP\r\n", b"250 ", b"421 "),
    "pop3": ("pop3", ["pop3d", "-d"], "idle_timeout", b"CAPA\r\n", b"+OK", b"-ERR "),
    "imap": ("imap", ["imapd", "-d"], "idle_timeout", b"a NOOP\r\n", b"a OK", b"* BYE "),
}
GIVE_UP = 20        # seconds: far beyond any limit configured here


@pytest.fixture(params=PROTOCOLS)
def serve(request, sandbox):
    """serve(**settings of the protocol's section) -> (port, protocol row); the daemon stops afterwards."""
    section, argv, timeout_key, *_ = PROTOCOLS[request.param]
    running = []

    def start(**settings):
        keys = {"listen": "127.0.0.1:0", timeout_key: "1s", **settings}
        if section == "smtp":
            keys["listen_submission"] = ""
        configure(sandbox, {section: keys, "auth": {"failure_delay": "0"}})
        proc, port = start_listener([program(argv[0]), "-C", sandbox.conf, *argv[1:]])
        running.append(proc)
        return port, PROTOCOLS[request.param]

    yield start
    for proc in running:
        stop_listener(proc)


def connect(port, source="127.0.0.1"):
    """A client socket past the greeting: (socket, greeting)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP, source_address=(source, 0))
    return sock, sock.recv(4096)


def closed_while(sock, action, pause):
    """Repeat ACTION(sock) every PAUSE seconds until the server closes; True if it did within GIVE_UP."""
    deadline = time.monotonic() + GIVE_UP
    sock.setblocking(False)
    while time.monotonic() < deadline:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return True
        except BlockingIOError:
            pass
        except OSError:
            return True
        try:
            action(sock)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:                    # reset or broken pipe: the server is gone
            return True
        time.sleep(pause)
    return False


def test_a_trickled_line_is_cut_at_its_deadline(serve):
    port, _ = serve()
    sock, greeting = connect(port)
    assert greeting
    assert closed_while(sock, lambda s: s.send(b"N"), 0.2), "one byte every 0.2 s kept a 1 s deadline alive"
    sock.close()


def test_the_login_phase_has_one_deadline(serve):
    port, (_, _, _, harmless, _, _) = serve(login_timeout="2s", max_login_commands="1000")
    sock, _ = connect(port)
    assert closed_while(sock, lambda s: s.send(harmless), 0.3), "commands inside the timeout kept the login open"
    sock.close()


def test_commands_before_login_have_a_budget(serve):
    port, (_, _, _, harmless, answer, _) = serve(max_login_commands="5")
    sock, _ = connect(port)
    sock.sendall(harmless * 50)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    assert received.count(answer) == 5
    sock.close()


def test_a_line_without_end_is_not_read_for_ever(serve):
    port, _ = serve()
    sock, _ = connect(port)
    flood = b"X" * 65536
    sent = 0

    def send(s):
        nonlocal sent
        sent += s.send(flood)

    assert closed_while(sock, send, 0), f"still reading after {sent} bytes without LF"
    assert sent < 256 << 20
    sock.close()


def test_sessions_from_one_address_are_limited(serve):
    port, (*_, refusal) = serve(max_sessions_per_address="2")
    first, second = connect(port), connect(port)
    third, told = connect(port)
    assert told.startswith(refusal)
    assert third.recv(100) == b""
    other, greeting = connect(port, source="127.0.0.2")
    assert greeting and not greeting.startswith(refusal)
    for sock, _ in (first, second):
        sock.close()
    third.close()
    other.close()


def test_smtp_data_timeout_holds_inside_a_line(sandbox):
    configure(sandbox, {"smtp": {"listen": "127.0.0.1:0", "listen_submission": "", "command_timeout": "60s",
                                 "data_timeout": "1s"}})
    proc, port = start_listener([program("sendmail"), "-C", sandbox.conf, "-bD"])
    try:
        sock, _ = connect(port)
        sock.sendall(b"EHLO client.example\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<alice@localhost>\r\n")
        replies = b""
        while replies.count(b"\r\n250 ") < 3:
            replies += sock.recv(4096)
        sock.sendall(b"DATA\r\n")
        assert sock.recv(4096).startswith(b"354")
        assert closed_while(sock, lambda s: s.send(b"x"), 0.1), "data_timeout did not hold inside a line"
        sock.close()
    finally:
        stop_listener(proc)



def test_imap_takes_no_message_before_login(sandbox):
    """An APPEND literal before login is held to max_command_size: nothing big is spooled for a stranger."""
    configure(sandbox, {"imap": {"listen": "127.0.0.1:0", "max_command_size": "64k"}})
    proc, port = start_listener([program("imapd"), "-C", sandbox.conf, "-d"])
    try:
        sock, _ = connect(port)
        sock.sendall(b"a APPEND INBOX {10000000}\r\n")
        assert sock.recv(4096).startswith(b"a NO [TOOBIG]")
        sock.close()
    finally:
        stop_listener(proc)
