"""serve_forking and serve_inetd, run in their own processes as a daemon would be."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from serverlib import python_env, stop, write_config

ECHO_SERVER = """
    import json, logging, os, sys
    from mailsuite.core import config
    from mailsuite.server import connection
    from mailsuite.server import listener, pool
    cfg = config.load(sys.argv[1])
    settings = json.loads(sys.argv[3])
    pool.MAX_IDLE = settings.pop("max_idle", pool.MAX_IDLE)

    def echo(conn):
        conn.write(b"+OK hello %d\\r\\n" % os.getpid())
        while True:
            line = conn.readline(100)
            if line.strip() == b"QUIT":
                conn.write(b"+OK bye\\r\\n")
                return
            conn.write(b"ECHO " + line)

    def ready(addresses):
        print(json.dumps(addresses), flush=True)

    logging.basicConfig(stream=sys.stderr)
    max_use = settings.pop("max_use", 1)
    listener.serve_forking(echo, listeners=[("127.0.0.1", 0, False)], max_children=int(sys.argv[2]),
                           logger=logging.getLogger("test"), on_ready=ready, busy_reply=b"-ERR [SYS/TEMP] busy\\r\\n",
                           limits=connection.Limits(line_timeout=30, **settings), max_use=max_use)
    print("returned", flush=True)
"""

# A process per session, and session processes that serve one client after another (SMTP's max_use).
MODES = [pytest.param(1, id="fork-per-session"), pytest.param(3, id="reused-processes")]


@pytest.fixture
def echo_server(tmp_path):
    conf, _ = write_config(tmp_path)
    procs = []

    def start(max_children, **settings):
        proc = subprocess.Popen([sys.executable, "-c", _dedent(ECHO_SERVER), conf, str(max_children),
                                 json.dumps(settings)], env=python_env(), stdout=subprocess.PIPE)
        procs.append(proc)
        (host, port), = json.loads(proc.stdout.readline())
        return proc, (host, port)

    yield start
    for proc in procs:
        stop(proc)


def _dedent(code):
    return textwrap.dedent(code)


def _connect(address):
    sock = socket.create_connection(address, timeout=10)
    return sock, sock.makefile("rb")


@pytest.mark.parametrize("max_use", MODES)
def test_each_client_gets_its_own_child(echo_server, max_use):
    proc, address = echo_server(5, max_use=max_use)
    a, a_in = _connect(address)
    b, b_in = _connect(address)
    pid_a = int(a_in.readline().split()[2])
    pid_b = int(b_in.readline().split()[2])
    assert pid_a != pid_b and proc.pid not in (pid_a, pid_b)
    a.sendall(b"one\r\n")
    b.sendall(b"two\r\n")
    assert a_in.readline() == b"ECHO one\r\n"
    assert b_in.readline() == b"ECHO two\r\n"
    for sock, f in ((a, a_in), (b, b_in)):
        sock.sendall(b"QUIT\r\n")
        assert f.readline() == b"+OK bye\r\n"
        assert f.readline() == b""
        sock.close()


@pytest.mark.parametrize("max_use", MODES)
def test_child_limit_refuses_with_busy_reply_and_reaps(echo_server, max_use):
    proc, address = echo_server(1, max_use=max_use)
    a, a_in = _connect(address)
    assert a_in.readline().startswith(b"+OK hello")
    b, b_in = _connect(address)
    assert b_in.readline() == b"-ERR [SYS/TEMP] busy\r\n"
    assert b_in.readline() == b""
    b.close()
    a.sendall(b"QUIT\r\n")
    assert a_in.readline() == b"+OK bye\r\n"
    a.close()
    for _ in range(100):                 # the parent reaps the child, then has room again
        c, c_in = _connect(address)
        line = c_in.readline()
        c.close()
        if line.startswith(b"+OK hello"):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the finished session was never reaped")


@pytest.mark.parametrize("max_use", MODES)
def test_sigterm_stops_accepting_but_lets_sessions_finish(echo_server, max_use):
    proc, address = echo_server(5, max_use=max_use)
    a, a_in = _connect(address)
    assert a_in.readline().startswith(b"+OK hello")
    proc.send_signal(signal.SIGTERM)
    for _ in range(100):
        try:
            socket.create_connection(address, timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):   # reset: queued as the socket closed
            break
        time.sleep(0.05)
    else:
        pytest.fail("still accepting after SIGTERM")
    assert proc.poll() is None
    a.sendall(b"still here\r\n")
    assert a_in.readline() == b"ECHO still here\r\n"
    a.sendall(b"QUIT\r\n")
    assert a_in.readline() == b"+OK bye\r\n"
    a.close()
    assert proc.stdout.readline() == b"returned\n"
    assert proc.wait(10) == 0


@pytest.mark.parametrize("max_use", MODES)
def test_no_zombies_after_many_sessions(echo_server, max_use):
    proc, address = echo_server(3, max_use=max_use)
    for _ in range(20):
        sock, f = _connect(address)
        f.readline()
        sock.close()
    time.sleep(0.5)
    children = subprocess.run(["ps", "-o", "stat=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
    assert "Z" not in children


def _hello(address):
    """A new client: (socket, its reader, the pid of the process serving it)."""
    sock, f = _connect(address)
    line = f.readline()
    assert line.startswith(b"+OK hello"), line
    return sock, f, int(line.split()[2])


def _quit(sock, f):
    """QUIT, and wait for the server to close: its process is then about to take the next client."""
    sock.sendall(b"QUIT\r\n")
    assert f.readline() == b"+OK bye\r\n"
    assert f.readline() == b""
    sock.close()


def _serving_pid(address):
    sock, f, pid = _hello(address)
    _quit(sock, f)
    return pid


def _eventually(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_session_process_serves_one_client_after_another_up_to_max_use(echo_server):
    proc, address = echo_server(5, max_use=3)
    first = [_serving_pid(address) for _ in range(3)]
    assert len(set(first)) == 1 and proc.pid not in first        # no fork per connection
    fourth = _serving_pid(address)
    assert fourth not in first                                   # it served its 3, then a new one took over
    _eventually(lambda: not os.path.exists(f"/proc/{first[0]}"))  # and the old one is gone, reaped


def test_each_session_of_a_reused_process_has_its_own_login_budget(echo_server):
    proc, address = echo_server(5, max_use=5, login_commands=2)
    sock, f, pid = _hello(address)
    sock.sendall(b"one\r\ntwo\r\nthree\r\n")
    assert f.readline() == b"ECHO one\r\n"
    assert f.readline() == b"ECHO two\r\n"
    assert f.readline() == b""                          # the third line was over the budget: cut off
    sock.close()
    sock, f, again = _hello(address)
    assert again == pid                                 # the same process...
    sock.sendall(b"one\r\n")
    assert f.readline() == b"ECHO one\r\n"              # ...with a fresh budget for the new client
    sock.close()


def test_reused_processes_keep_the_per_address_limit(echo_server):
    proc, address = echo_server(5, max_use=5, per_address=1)
    a, a_in, _pid = _hello(address)
    b, b_in = _connect(address)
    assert b_in.readline() == b"-ERR [SYS/TEMP] busy\r\n"
    b.close()
    _quit(a, a_in)
    _eventually(lambda: _connect_line(address).startswith(b"+OK hello"))


def _connect_line(address):
    sock, f = _connect(address)
    try:
        return f.readline()
    finally:
        sock.close()


def test_a_killed_session_process_costs_its_own_session_only(echo_server):
    proc, address = echo_server(5, max_use=10)
    a, a_in, pid_a = _hello(address)
    b, b_in, pid_b = _hello(address)
    assert pid_a != pid_b
    os.kill(pid_a, signal.SIGKILL)
    assert a_in.readline() == b""                      # A's session is gone...
    b.sendall(b"still here\r\n")
    assert b_in.readline() == b"ECHO still here\r\n"   # ...B's goes on
    _quit(b, b_in)
    c, c_in, pid_c = _hello(address)                   # and new clients are served
    assert pid_c != pid_a
    _quit(c, c_in)


def test_sighup_retires_the_session_processes(echo_server):
    proc, address = echo_server(5, max_use=10)
    before = _serving_pid(address)
    assert _serving_pid(address) == before
    proc.send_signal(signal.SIGHUP)
    _eventually(lambda: not os.path.exists(f"/proc/{before}"))     # the idle one exits at once
    assert _serving_pid(address) != before                         # new sessions, new processes


def test_an_idle_session_process_is_retired(echo_server):
    proc, address = echo_server(5, max_use=10, max_idle=0.5)
    pid = _serving_pid(address)
    _eventually(lambda: not os.path.exists(f"/proc/{pid}"))


INETD_SESSION = """
    import sys
    from mailsuite.core import config
    from mailsuite.server import inetd
    cfg = config.load(sys.argv[1])

    def session(conn):
        conn.write(b"+OK peer=%s tls=%s\\r\\n" % (str(conn.peer).encode(), str(conn.is_tls).encode()))
        conn.write(b"GOT " + conn.readline(100))

    inetd.serve_inetd(session)
"""


def test_inetd_mode_on_a_tcp_socket_knows_the_peer(tmp_path):
    conf, _ = write_config(tmp_path)
    server_socket = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server_socket.getsockname(), timeout=10)
    accepted, _ = server_socket.accept()
    proc = subprocess.Popen([sys.executable, "-c", _dedent(INETD_SESSION), conf], env=python_env(),
                            stdin=accepted, stdout=accepted)
    accepted.close()
    f = client.makefile("rb")
    assert f.readline() == f"+OK peer={client.getsockname()} tls=False\r\n".encode()
    client.sendall(b"hi\r\n")
    assert f.readline() == b"GOT hi\r\n"
    assert f.readline() == b""
    assert proc.wait(10) == 0
    client.close()
    server_socket.close()


def test_inetd_mode_on_pipes(tmp_path):
    conf, _ = write_config(tmp_path)
    done = subprocess.run([sys.executable, "-c", _dedent(INETD_SESSION), conf], env=python_env(),
                          input=b"hi\r\n", capture_output=True, timeout=30)
    assert done.stdout == b"+OK peer=None tls=False\r\nGOT hi\r\n"


def test_inetd_mode_peer_that_vanishes_is_quiet(tmp_path):
    conf, _ = write_config(tmp_path)
    done = subprocess.run([sys.executable, "-c", _dedent(INETD_SESSION), conf], env=python_env(),
                          input=b"", capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stderr == b""
