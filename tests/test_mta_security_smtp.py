"""Attacks on the SMTP side of a system-mode MTA: log injection, backscatter, start-up.

The daemon runs as root (`sendmail -bD`) with its log on stderr; clients
talk to it over loopback; local users are real users (useradd).
"""

import base64
import os
import re
import signal

import pytest
from mta_system import SystemMta
from procs import descendants
from smtp_helpers import S250_OK, S354_START_DATA, S535_AUTH_FAILED, RawClient, wait_for
from stage import stage

pytestmark = pytest.mark.root

EVIL_LOGIN = "nosuch\n\x1b]0;pwned\x07Nov 30 00:00:00 host smtpd[1]: forged line"
EVIL_SENDER = '"\x1b]0;ENV\x07"@x.example'
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \S+\[\d+\]: ")


@pytest.fixture
def mta():
    host = SystemMta(auth={"failure_delay": "0", "pam": "no"}, smtp={"relay_networks": "192.0.2.0/24"})
    try:
        yield host
    finally:
        host.close()


def test_client_strings_are_escaped_in_every_log_line(mta, real_users):
    a = real_users.add("secA")
    port = mta.start_daemon()
    client = RawClient(port)
    try:
        assert client.reply()[0] == 220
        assert client.command("EHLO client.test")[0] == S250_OK
        plain = base64.b64encode(f"\0{EVIL_LOGIN}\0secret".encode()).decode()
        assert client.command(f"AUTH PLAIN {plain}")[0] == S535_AUTH_FAILED
        assert client.command(f"MAIL FROM:<{EVIL_SENDER}>")[0] == 501           # refused, and logged quoted
        assert client.command("MAIL FROM:<someone@client.test>")[0] == S250_OK
        assert client.command('RCPT TO:<"\x1b[2J\x1b[H"@elsewhere.example>')[0] == 501
        assert client.command(f"RCPT TO:<{a.name}@mta.test>")[0] == S250_OK
        assert client.command("DATA")[0] == S354_START_DATA
        assert client.command("Subject: hi\r\n\r\nhello\r\n.")[0] == S250_OK
        client.command("QUIT")
    finally:
        client.close()
    wait_for(lambda: mta.messages(a))
    # a local user's sendmail -bs: the sender goes through the maildrop to the runner's log
    session = f"HELO here\nMAIL FROM:<{EVIL_SENDER}>\nQUIT\n"
    done = mta.sendmail(a, "-bs", input=session.encode())
    assert done.returncode == 0 and b"501 5.1.7" in done.stdout
    log = mta.daemon_log()
    assert "pwned" in log and "ENV" in log and "[2J" in log
    for line in log.splitlines():
        assert LOG_LINE.match(line), line
        assert line.isprintable(), line


def session(port, sender, recipients):
    """MAIL and RCPT for each recipient: {recipient: (code, first reply line)}; the transaction is reset."""
    client = RawClient(port)
    try:
        assert client.reply()[0] == 220
        assert client.command("EHLO client.test")[0] == S250_OK
        assert client.command(f"MAIL FROM:<{sender}>")[0] == S250_OK
        answers = {}
        for rcpt in recipients:
            code, lines = client.command(f"RCPT TO:<{rcpt}>")
            answers[rcpt] = (code, lines[0])
        client.command("RSET")
        client.command("QUIT")
        return answers
    finally:
        client.close()


def test_unknown_local_recipients_are_refused_at_rcpt(mta, real_users):
    """Backscatter: a forged sender must never get a bounce for a name that does not exist."""
    a = real_users.add("secA")
    mta.aliases.write_text(f"postmaster: root\nstaff: {a.name}\n")
    port = mta.start_daemon()
    answers = session(port, "victim@elsewhere.example",
                      ["nosuchuser@mta.test", f"{a.name}@mta.test", "Staff@mta.test", "postmaster@mta.test",
                       "nosuchuser@localhost"])
    assert answers["nosuchuser@mta.test"][0] == 550
    assert " 5.1.1 " in answers["nosuchuser@mta.test"][1]
    assert answers["nosuchuser@localhost"][0] == 550
    assert answers[f"{a.name}@mta.test"][0] == answers["Staff@mta.test"][0] == S250_OK
    assert answers["postmaster@mta.test"][0] == S250_OK
    assert mta.queue_entries("incoming") == mta.queue_entries("deferred") == []


def test_a_catch_all_takes_unknown_local_recipients(real_users):
    a = real_users.add("secA")
    host = SystemMta(queue={"catch_all": a.name})
    try:
        port = host.start_daemon()
        client = RawClient(port)
        try:
            assert client.reply()[0] == 220
            for line in ("EHLO client.test", "MAIL FROM:<someone@elsewhere.example>", "RCPT TO:<nosuchuser@mta.test>"):
                assert client.command(line)[0] == S250_OK
            assert client.command("DATA")[0] == S354_START_DATA
            assert client.command("Subject: for nobody\r\n\r\nhello\r\n.")[0] == S250_OK
        finally:
            client.close()
        [message] = wait_for(lambda: host.messages(a))
        assert message["Subject"] == "for nobody"
    finally:
        host.close()


def test_unknown_recipients_may_still_be_accepted_when_configured(real_users):
    host = SystemMta(smtp={"reject_unknown_recipients": "no"})
    try:
        port = host.start_daemon()
        assert session(port, "x@elsewhere.example", ["nosuchuser@mta.test"])["nosuchuser@mta.test"][0] == S250_OK
    finally:
        host.close()


def root_only_certificate(mta):
    from serverlib import make_certificate
    cert, key = make_certificate(mta.dir)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


def test_a_users_own_smtp_daemon_starts_without_roots_tls_key(real_users):
    a = real_users.add("secA")
    host = SystemMta()
    daemon = None
    try:
        cert, key = root_only_certificate(host)
        conf = a.write("mailsuite.conf", (
            f"[mailsuite]\nhostname = mta.test\nspool_dir = {a.home}/spool\nqueue_dir = {a.home}/queue\n"
            f"maildrop_dir = {a.home}/maildrop\nstate_dir = {a.home}/state\nlog_socket =\nindex_dir =\n"
            f"[smtp]\nlisten = 127.0.0.1:0\n[tls]\ncert_file = {cert}\nkey_file = {key}\n"))
        assert a.run(["mkdir", "spool", "queue", "maildrop"]).returncode == 0
        daemon = a.run_background([stage().program("sendmail"), "-C", str(conf), "-bD"])
        port = None
        for line in daemon.stderr:
            found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, f"sendmail -bD exited with status {daemon.wait(10)}"
        client = RawClient(port)
        try:
            assert client.reply()[0] == 220
            code, lines = client.command("EHLO client.test")
            assert code == S250_OK and not any("STARTTLS" in line for line in lines)
        finally:
            client.close()
    finally:
        if daemon is not None:
            family = descendants(daemon.pid)
            daemon.terminate()                  # the master stops its runner
            daemon.wait(30)
            for pid in family:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        host.close()


def test_preauth_imapd_never_touches_the_tls_key(real_users):
    a = real_users.add("secA")
    host = SystemMta()
    try:
        cert, key = root_only_certificate(host)
        with open(host.conf, "a") as f:
            f.write(f"[tls]\ncert_file = {cert}\nkey_file = {key}\n")
        done = host.run_as(a, "imapd", "--preauth", a.name, input=b"a1 LOGOUT\r\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(b"* PREAUTH")
    finally:
        host.close()
