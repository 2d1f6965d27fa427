"""The daemon master: signals, reload, submission port, a full queue, sendmail -bd detaching."""

import base64
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import peers
import pytest
from smtp_helpers import LIB, ROOT, S250_OK, Instance, free_port, wait_for

MESSAGE = b"Subject: t\r\n\r\nbody\r\n"


def test_sigterm_lets_a_running_session_finish(tmp_path):
    host = Instance(tmp_path / "h").start()
    client = smtplib.SMTP("127.0.0.1", host.port)
    client.ehlo("client.example")
    host.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopped accepting" in host.log_text())
    assert client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
    client.quit()
    assert host.process.wait(20) == 0
    assert len(host.queued()) == 1
    host.stop()


def test_sighup_rereads_the_configuration(tmp_path):
    host = Instance(tmp_path / "h").start()
    try:
        text = Path(host.conf).read_text().replace("[smtp]\n", "[smtp]\nmax_recipients = 1\n")
        Path(host.conf).write_text(text)
        host.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in host.log_text())
        with smtplib.SMTP("127.0.0.1", host.port) as client:
            client.ehlo("client.example")
            client.mail("alice@example.test")
            assert client.rcpt("bob@example.test")[0] == S250_OK
            assert client.rcpt("alice@example.test")[0] == 452
        Path(host.conf).write_text(text + "[nonsense]\n")
        host.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in host.log_text())
        with smtplib.SMTP("127.0.0.1", host.port) as client:
            assert client.noop()[0] == S250_OK                    # still serving, old configuration
    finally:
        host.stop()


def test_sighup_leaves_no_defunct_runner(tmp_path):
    """Each SIGHUP once left a zombie runner behind; the master has one live runner, however many it gets."""
    from procs import children_of
    host = Instance(tmp_path / "h").start(runner=True)
    try:
        for round_ in range(1, 4):
            host.process.send_signal(signal.SIGHUP)
            wait_for(lambda: host.log_text().count("configuration reloaded") >= round_, timeout=60)

        def states():
            found = {}
            for pid in children_of(host.process.pid):
                try:
                    found[pid] = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
            return found
        deadline = time.monotonic() + 60
        while len(states()) != 1 or "Z" in states().values():
            assert time.monotonic() < deadline, f"children {states()}; log:\n{host.log_text()[-2000:]}"
            time.sleep(0.1)
    finally:
        host.stop()


def test_submission_port_requires_auth(tmp_path):
    port = free_port("127.0.0.1")
    host = Instance(tmp_path / "h", smtp={"listen_submission": f"127.0.0.1:{port}"}).start()
    try:
        assert port in host.ports
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo("client.example")
            code, reply = client.mail("alice@example.test")
            assert code == 530 and b"5.7.0" in reply
            client.login("alice", "alice")
            assert client.sendmail("alice@example.test", ["anyone@elsewhere.test"], MESSAGE) == {}
        with smtplib.SMTP("127.0.0.1", host.port) as client:           # port 25 needs no AUTH for local mail
            assert client.sendmail("x@elsewhere.test", ["bob@example.test"], MESSAGE) == {}
    finally:
        host.stop()


def _session_pids(host):
    """The pids of the processes that served each session so far, from the log, in order."""
    return [int(pid) for pid in re.findall(r"smtpd\[(\d+)\]: connect from", host.log_text())]


def _idle_again(host, sessions):
    """Wait until SESSIONS sessions have ended and their process told the listener it is free.

    That message follows the client's last reply, so a client that
    reconnects at once may rightly get a new process."""
    wait_for(lambda: host.log_text().count("disconnect from") >= sessions)
    time.sleep(0.3)


def test_session_processes_serve_one_connection_after_another(tmp_path):
    """No fork per connection: a session process serves the next client once it is done (max_use)."""
    host = Instance(tmp_path / "h", smtp={"max_use": "3"}).start()
    try:
        for n in range(4):
            with smtplib.SMTP("127.0.0.1", host.port) as client:
                assert client.sendmail("x@elsewhere.test", ["bob@example.test"], MESSAGE) == {}
            _idle_again(host, n + 1)
        wait_for(lambda: len(_session_pids(host)) == 4)
        pids = _session_pids(host)
        assert pids[0] == pids[1] == pids[2] != pids[3] and host.process.pid not in pids
        assert len(host.queued()) == 4
    finally:
        host.stop()


def _auth_plain(client, password):
    """One AUTH PLAIN attempt as alice: the reply code."""
    token = base64.b64encode(b"\0alice\0" + password.encode()).decode()
    return client.docmd("AUTH", "PLAIN " + token)[0]


def test_a_reused_session_process_keeps_nothing_of_the_previous_client(tmp_path):
    """The next client on the same process is not logged in, and has its whole AUTH failure budget."""
    port = free_port("127.0.0.1")
    host = Instance(tmp_path / "h", smtp={"listen_submission": f"127.0.0.1:{port}"},
                    auth={"failure_delay": "0", "max_login_failures": "2"}).start()
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo("client.example")
            assert _auth_plain(client, "wrong") == 535
            assert _auth_plain(client, "alice") == 235
            assert client.sendmail("alice@example.test", ["anyone@elsewhere.test"], MESSAGE) == {}
        _idle_again(host, 1)
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo("client.example")
            code, reply = client.mail("alice@example.test")
            assert code == 530 and b"5.7.0" in reply            # the last client's login is not ours
            client.rset()
            assert _auth_plain(client, "wrong") == 535         # one failure of a fresh budget of two...
            assert _auth_plain(client, "alice") == 235         # ...so this one is still allowed
        pids = _session_pids(host)
        assert len(pids) == 2 and pids[0] == pids[1], host.log_text()     # it was the same process
    finally:
        host.stop()


def test_full_queue_answers_452_and_keeps_nothing(tmp_path):
    host = Instance(tmp_path / "h", queue={"min_free_space": "100000G"}).start()
    try:
        with smtplib.SMTP("127.0.0.1", host.port) as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
        assert info.value.smtp_code == 452 and b"4.3.1" in info.value.smtp_error
        assert host.queued() == []
    finally:
        host.stop()


def test_sendmail_bd_detaches_with_a_pid_file(tmp_path):
    port = free_port("127.0.0.1")
    host = Instance(tmp_path / "h", smtp={"listen": f"127.0.0.1:{port}"})
    env = dict(os.environ, PYTHONPATH=str(LIB))
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "sendmail"), "-bd", "-C", host.conf],
                            env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pid_file = host.dir / "state" / "smtpd.pid"
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))
    try:
        with wait_for(lambda: _connect(port)) as client:
            assert client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
        wait_for(lambda: (host.dir / "spool" / "bob").exists() and (host.dir / "spool" / "bob").stat().st_size)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid))
    assert not pid_file.exists()


def test_address_in_use_is_one_line_and_ex_unavailable(tmp_path):
    import socket
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    host = Instance(tmp_path / "h", smtp={"listen": f"127.0.0.1:{port}"})
    env = dict(os.environ, PYTHONPATH=str(LIB))
    try:
        result = subprocess.run([sys.executable, str(ROOT / "bin" / "sendmail"), "-bD", "-C", host.conf],
                                env=env, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode == os.EX_UNAVAILABLE
    assert result.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_stale_pid_file_does_not_stop_the_daemon(tmp_path):
    port = free_port("127.0.0.1")
    host = Instance(tmp_path / "h", smtp={"listen": f"127.0.0.1:{port}"})
    pid_file = host.dir / "state" / "smtpd.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text("999999\n")                         # a daemon that was killed
    env = dict(os.environ, PYTHONPATH=str(LIB))
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "sendmail"), "-bd", "-C", host.conf],
                            env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "999999"
                       and pid_file.read_text().strip()))
    try:
        with wait_for(lambda: _connect(port)) as client:
            assert client.noop()[0] == S250_OK
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid))


def _connect(port):
    try:
        return smtplib.SMTP("127.0.0.1", port)
    except OSError:
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.root
def test_disk_full_mid_message_answers_452_and_the_queue_stays_clean(tmp_path):
    queue_dir = tmp_path / "h" / "queue"
    queue_dir.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(queue_dir)],
                             capture_output=True)
    if mounted.returncode != 0:
        peers.unavailable("mounting a tmpfs", mounted.stderr.decode().strip())
    try:
        host = Instance(tmp_path / "h", queue={"min_free_space": "0"}).start()
        try:
            big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 600      # 600 KB > 256 KB
            with smtplib.SMTP("127.0.0.1", host.port) as client:
                with pytest.raises(smtplib.SMTPDataError) as info:
                    client.sendmail("alice@example.test", ["bob@example.test"], big)
                assert info.value.smtp_code == 452
                # a message that fits still goes through in the same session
                assert client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
            [(envelope, data)] = host.queued()
            assert data.endswith(b"\nbody\n")
            assert not any((queue_dir / "tmp").iterdir())
        finally:
            host.stop()
    finally:
        subprocess.run(["umount", str(queue_dir)], capture_output=True)
