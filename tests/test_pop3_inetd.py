"""pop3d under a real inetd (Debian's openbsd-inetd): the socket on stdin, stdout and stderr."""

import poplib
import socket
import subprocess
import time

import peers
import pytest
from conftest import program
from pop3lib import configure, deliver_to, message

pytestmark = pytest.mark.root


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port):
    deadline = time.monotonic() + 10
    while True:
        try:
            return poplib.POP3("127.0.0.1", port, timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def inetd(sandbox, tmp_path):
    inetd = peers.require("inetd")
    configure(sandbox, {"auth": {"failure_delay": "0"}})
    port = free_port()
    conf = tmp_path / "inetd.conf"
    conf.write_text(f"127.0.0.1:{port} stream tcp nowait root {program('pop3d')} pop3d -C {sandbox.conf}\n")
    proc = subprocess.Popen([inetd, "-d", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield port
    proc.terminate()
    proc.wait(10)


def test_session_through_inetd(sandbox, inetd):
    deliver_to(sandbox, "alice", message("one"))
    deliver_to(sandbox, "alice", message("two"))
    pop = connect(inetd)
    assert pop.getwelcome() == b"+OK POP3 server ready"
    pop.user("alice")
    assert pop.pass_("alice") == b"+OK alice has 2 messages"     # no log line leaks onto the socket
    _, lines, _ = pop.retr(2)
    assert b"Subject: two" in lines
    pop.dele(1)
    assert pop.quit().startswith(b"+OK bye")
    pop = connect(inetd)
    pop.user("alice")
    pop.pass_("alice")
    assert pop.stat()[0] == 1
    pop.quit()
