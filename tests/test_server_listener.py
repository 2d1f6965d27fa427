"""serve_forking and serve_inetd, run in their own processes as a daemon would be."""

import json
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
    from mailsuite.server import listener
    cfg = config.load(sys.argv[1])

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
    listener.serve_forking(echo, listeners=[("127.0.0.1", 0, False)], max_children=int(sys.argv[2]),
                           logger=logging.getLogger("test"), on_ready=ready, busy_reply=b"-ERR [SYS/TEMP] busy\\r\\n",
                           limits=connection.Limits(line_timeout=30))
    print("returned", flush=True)
"""


@pytest.fixture
def echo_server(tmp_path):
    conf, _ = write_config(tmp_path)
    procs = []

    def start(max_children):
        proc = subprocess.Popen([sys.executable, "-c", _dedent(ECHO_SERVER), conf, str(max_children)],
                                env=python_env(), stdout=subprocess.PIPE)
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


def test_each_client_gets_its_own_child(echo_server):
    proc, address = echo_server(5)
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


def test_child_limit_refuses_with_busy_reply_and_reaps(echo_server):
    proc, address = echo_server(1)
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


def test_sigterm_stops_accepting_but_lets_sessions_finish(echo_server):
    proc, address = echo_server(5)
    a, a_in = _connect(address)
    assert a_in.readline().startswith(b"+OK hello")
    proc.send_signal(signal.SIGTERM)
    for _ in range(100):
        try:
            socket.create_connection(address, timeout=1).close()
        except ConnectionRefusedError:
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


def test_no_zombies_after_many_sessions(echo_server):
    proc, address = echo_server(3)
    for _ in range(20):
        sock, f = _connect(address)
        f.readline()
        sock.close()
    time.sleep(0.5)
    children = subprocess.run(["ps", "-o", "stat=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
    assert "Z" not in children


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
