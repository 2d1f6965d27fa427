"""sendmail -bD with its queue runner: dropped mail is picked up by inotify, SMTP mail is delivered."""

import os
import signal
import smtplib
import socket
import subprocess
import time

import peers
import pytest
from mta_helpers import MESSAGE, queue_files, sendmail_path, set_config, wait_for_messages
from procs import children_of, descendants
from test_queue_durability import wait_until

from mailsuite.mta import runnerlock


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(sandbox):
    port = free_port()
    set_config(sandbox, "smtp", "listen", f"127.0.0.1:{port}")
    proc = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-bD", "-q1m"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=sandbox.env)
    deadline = time.monotonic() + 20
    while not runnerlock.active(sandbox.cfg.mailsuite.queue_dir) or not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("sendmail -bD did not start")
        time.sleep(0.05)
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_dropped_mail_is_picked_up_by_the_runner(sandbox, daemon):
    # many, quickly: the runner must never see a drop file half-committed
    for _ in range(25):
        assert sandbox.run("sendmail", "-i", "alice", input=MESSAGE).returncode == 0
    assert len(wait_for_messages(sandbox.spool("alice"), 25)) == 25
    assert queue_files(sandbox, "incoming") == []


def test_smtp_mail_is_queued_then_delivered(sandbox, daemon):
    with smtplib.SMTP("127.0.0.1", daemon, timeout=20) as client:
        client.ehlo("client.test")
        client.sendmail("carol@example.org", ["bob@localhost", "alice@localhost"],
                        b"Subject: over smtp\r\n\r\nhello\r\n")
    assert len(wait_for_messages(sandbox.spool("bob"), 1)) == 1
    [msg] = wait_for_messages(sandbox.spool("alice"), 1)
    assert msg["Subject"] == "over smtp"
    assert msg["Received"]


def test_bs_speaks_smtp_on_stdio_to_swaks(sandbox):
    swaks = peers.require("swaks")
    result = subprocess.run([swaks, "--pipe", f"{sendmail_path()} -C {sandbox.conf} -bs",
                             "--from", "carol@example.org", "--to", "alice@localhost",
                             "--header", "Subject: swaks via -bs"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"250" in result.stdout
    assert sandbox.run("sendmail", "-q").returncode == 0
    [msg] = wait_for_messages(sandbox.spool("alice"), 1)
    assert msg["Subject"] == "swaks via -bs"


def test_mailq_by_name(sandbox, tmp_path):
    link = tmp_path / "mailq"
    link.symlink_to(sendmail_path())
    assert sandbox.run("sendmail", "-odq", "alice", input=MESSAGE).returncode == 0
    assert sandbox.run("sendmail", "-q").returncode == 0
    result = subprocess.run([str(link), "-C", sandbox.conf], capture_output=True)
    assert result.returncode == 0
    assert result.stdout == b"Mail queue is empty\n"


def test_killed_worker_of_the_daemon_is_retried(sandbox, daemon, tmp_path):
    """SIGKILL the daemon's delivery worker mid-command: the runner takes the message back, deferred."""
    started, out = tmp_path / "started", tmp_path / "out"
    aliases = sandbox.dir / "aliases"
    aliases.write_text(f'slow: "|touch {started}; sleep 30"\n')
    assert sandbox.run("sendmail", "-i", "slow", input=MESSAGE).returncode == 0
    wait_until(started.exists)
    [worker] = [pid for pid in descendants(os.getpid()) if _is_worker(pid, started)]
    aliases.write_text(f'slow: "|cat > {out}"\n')
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: queue_files(sandbox, "deferred"))
    [qid] = queue_files(sandbox, "deferred")
    assert sandbox.run("sendmail", f"-qI{qid}").returncode == 0          # the daemon's runner is woken to try it
    wait_until(lambda: queue_files(sandbox, "active") == queue_files(sandbox, "deferred") == [])
    assert out.read_bytes().count(b"Subject: hello") == 1


def _is_worker(pid, marker):
    """The delivery worker is the parent of the shell running the alias command."""
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if str(marker).encode() in f.read():
                    return True
        except OSError:
            continue
    return False


def test_daemon_retries_deferred_mail_when_due(sandbox, tmp_path):
    """The daemon's runner wakes for a retry by itself, long before its scan interval."""
    flag, out = tmp_path / "ok", tmp_path / "out"
    (sandbox.dir / "aliases").write_text(f'flaky: "|test -e {flag} || exit 75; cat > {out}"\n')
    set_config(sandbox, "queue", "min_backoff", "1s")
    port = free_port()
    set_config(sandbox, "smtp", "listen", f"127.0.0.1:{port}")
    proc = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-bD"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: runnerlock.active(sandbox.cfg.mailsuite.queue_dir))
        assert sandbox.run("sendmail", "-i", "flaky", input=MESSAGE).returncode == 0
        wait_until(lambda: queue_files(sandbox, "deferred"))
        flag.touch()
        wait_until(out.exists)                  # the scan interval is 5m: only the retry time wakes it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _bs_over_tcp(sandbox, commands):
    """`sendmail -bs` as inetd runs it: a TCP connection as its stdin and stdout.

    Each of COMMANDS is sent once the previous reply is complete; returns every reply line."""
    import socket
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=30)
        accepted, _ = listener.accept()
    with client, accepted:
        proc = subprocess.Popen([sendmail_path(), "-C", sandbox.conf, "-bs"], stdin=accepted, stdout=accepted,
                                stderr=subprocess.DEVNULL, env=sandbox.env)
        accepted.close()
        replies = client.makefile("rb")
        try:
            lines = [_reply(replies)]
            for command in commands:
                client.sendall(command + b"\r\n")
                lines += [_reply(replies)]
        finally:
            replies.close()
            client.close()
            proc.wait(30)
    return lines


def _reply(stream):
    """One (possibly multi-line) SMTP reply, as its last line."""
    while True:
        line = stream.readline().decode()
        if line[3:4] != "-":
            return line.rstrip("\r\n")


def test_bs_under_inetd_gives_a_network_client_no_local_trust(sandbox):
    """inetd's `smtp stream tcp nowait root sendmail sendmail -bs` must not make every client a local user."""
    from mta_helpers import set_config
    set_config(sandbox, "smtp", "relay_networks", "192.0.2.0/24")      # loopback is no relay network here
    greeting, ehlo, mail, stranger, local, bye = _bs_over_tcp(sandbox, [
        b"EHLO client.example", b"MAIL FROM:<x@client.example>", b"RCPT TO:<victim@elsewhere.example>",
        b"RCPT TO:<alice@localhost>", b"QUIT"])
    assert greeting.startswith("220 ") and mail.startswith("250 ")
    assert stranger.startswith("554 5.7.1"), stranger                  # no relay for a stranger
    assert local.startswith("250 "), local                             # alice is still ours


def test_bs_under_inetd_refuses_bare_newlines_like_the_daemon(sandbox):
    replies = _bs_over_tcp(sandbox, [b"EHLO client.example", b"MAIL FROM:<x@client.example>",
                                     b"RCPT TO:<alice@localhost>", b"DATA",
                                     b"Subject: smuggle\n\n.\nMAIL FROM:<y@z>\r\n."])
    assert replies[-1].startswith("550 5.5.2"), replies
