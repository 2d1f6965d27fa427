"""The whole suite as `make demo` runs it: mailsuite up, then mail in by SMTP, out by POP3 and IMAP.

The sandbox's fixed ports are replaced by free ones, so the test can run
beside a real demo; every daemon must be gone once `up` has been sent
SIGTERM.
"""

import imaplib
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import time

import pytest
from conftest import program


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture
def running_sandbox(tmp_path):
    from mailsuite.admin import sandbox
    for daemon in ("sendmail", "pop3d", "imapd", "webmail"):
        program(daemon)
    directory = tmp_path / "sandbox"
    subprocess.run([program("mailsuite"), "init", "--dir", str(directory)], check=True, capture_output=True)
    conf = directory / "mailsuite.conf"
    ports = {section: free_port() for section in ("smtp", "pop3", "imap", "webmail")}
    sandbox.set_ports(str(conf), ports)
    text = conf.read_text()
    assert all(f"listen = 127.0.0.1:{port}" in text for port in ports.values()), text
    up = subprocess.Popen([program("mailsuite"), "up", "--dir", str(directory)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        for port in ports.values():
            assert wait_listening(port), up.stdout.read() if up.poll() is not None else "not listening"
        yield directory, ports
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    for port in ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_mail_travels_through_the_sandbox(running_sandbox):
    directory, ports = running_sandbox
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("bob@localhost", ["alice@localhost"],
                      b"From: bob@localhost\r\nTo: alice@localhost\r\nSubject: through the sandbox\r\n\r\nhello alice\r\n")
    spool = directory / "spool" / "alice"
    deadline = time.monotonic() + 60
    while b"through the sandbox" not in spool.read_bytes():
        assert time.monotonic() < deadline, "the message never reached the spool"
        time.sleep(0.1)

    imap = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30)
    imap.login("alice", "alice")
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 2                       # the welcome message, and ours
    typ, data = imap.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"through the sandbox" in data[0][1]
    imap.logout()

    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=30)
    pop.user("alice")
    pop.pass_("alice")
    count, _ = pop.stat()
    assert count == 2
    lines = pop.retr(2)[1]
    assert b"Subject: through the sandbox" in lines and b"hello alice" in lines
    pop.quit()


def test_the_sandboxs_webmail_shows_the_welcome_message(running_sandbox):
    import http.cookiejar
    import urllib.parse
    import urllib.request
    directory, ports = running_sandbox
    base = f"http://127.0.0.1:{ports['webmail']}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(base + "/login", timeout=30).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"user": "alice", "password": "alice", "csrf": token}).encode()
    page = opener.open(base + "/login", data=form, timeout=30).read().decode()      # redirected to the inbox
    assert "Welcome to the mailsuite sandbox" in page


def test_the_sandbox_speaks_tls_with_its_own_certificate(running_sandbox):
    import ssl
    directory, ports = running_sandbox
    context = ssl.create_default_context(cafile=str(directory / "tls" / "cert.pem"))
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
        smtp.starttls(context=context)
        assert smtp.ehlo()[0] == 250
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=30)
    pop.stls(context=context)
    pop.user("alice")
    pop.pass_("alice")
    pop.quit()
    imap = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30)
    imap.starttls(ssl_context=context)
    imap.login("alice", "alice")
    imap.logout()


def test_init_never_builds_over_an_existing_sandbox(tmp_path):
    directory = tmp_path / "sandbox"
    subprocess.run([program("mailsuite"), "init", "--dir", str(directory)], check=True, capture_output=True)
    conf = directory / "mailsuite.conf"
    conf.write_text(conf.read_text() + "# my edit\n")
    spool = (directory / "spool" / "alice").read_bytes()
    again = subprocess.run([program("mailsuite"), "init", "--dir", str(directory)], capture_output=True, text=True)
    assert again.returncode == 73                                    # EX_CANTCREAT
    assert again.stderr.count("\n") == 1 and "already holds a sandbox" in again.stderr
    assert conf.read_text().endswith("# my edit\n")
    assert (directory / "spool" / "alice").read_bytes() == spool     # no second welcome


def test_base_port_moves_every_service_and_the_welcome_says_so(tmp_path):
    directory = tmp_path / "sandbox"
    subprocess.run([program("mailsuite"), "init", "--dir", str(directory), "--base-port", "40000"],
                   check=True, capture_output=True)
    text = (directory / "mailsuite.conf").read_text()
    for port in (40025, 40110, 40143, 40080):
        assert f"listen = 127.0.0.1:{port}" in text
    assert "imap_server = 127.0.0.1:40143" in text and "smtp_server = 127.0.0.1:40025" in text
    welcome = (directory / "spool" / "alice").read_text()
    assert "127.0.0.1:40110" in welcome and "127.0.0.1:40143" in welcome and "1430" not in welcome
    assert "http://127.0.0.1:40080/" in welcome


def reserved_ports(count):
    """Ports bound (not listening) with SO_REUSEADDR: no other test can take them, a probe can bind them."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
    return held


def test_up_with_a_taken_port_starts_nothing_and_names_the_key(tmp_path):
    from mailsuite.admin import sandbox
    directory = tmp_path / "sandbox"
    subprocess.run([program("mailsuite"), "init", "--dir", str(directory)], check=True, capture_output=True)
    conf = directory / "mailsuite.conf"
    conf.write_text(conf.read_text() + "# kept\n")
    held = reserved_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = [s.getsockname()[1] for s in held]
        sandbox.set_ports(str(conf), {"smtp": others[0], "pop3": port, "imap": others[1], "webmail": others[2]})
        done = subprocess.run([program("mailsuite"), "up", "--dir", str(directory)],
                              capture_output=True, text=True, timeout=60)
    for sock in held:
        sock.close()
    assert done.returncode == 69, done                              # EX_UNAVAILABLE
    assert done.stdout == ""                                        # no banner: nothing was started
    assert done.stderr.count("\n") == 1
    assert f"127.0.0.1:{port}" in done.stderr and "[pop3] listen" in done.stderr and "--base-port" in done.stderr
    assert conf.read_text().endswith("# kept\n")


def test_up_with_a_base_port_moves_an_existing_sandbox(tmp_path):
    directory = tmp_path / "sandbox"
    subprocess.run([program("mailsuite"), "init", "--dir", str(directory)], check=True, capture_output=True)
    conf = directory / "mailsuite.conf"
    conf.write_text(conf.read_text() + "# kept\n")
    with socket.socket() as taken:                                   # POP3's new port is taken: nothing starts
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        base = taken.getsockname()[1] - 110
        done = subprocess.run([program("mailsuite"), "up", "--dir", str(directory), "--base-port", str(base)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 69 and f"127.0.0.1:{base + 110}" in done.stderr
    text = conf.read_text()
    for offset in (25, 110, 143, 80):
        assert f"listen = 127.0.0.1:{base + offset}" in text
    assert text.endswith("# kept\n")


def test_a_sandbox_from_before_the_webmail_gets_its_section_on_its_ports(tmp_path):
    import re as regex

    from mailsuite.admin import command as mailsuite_cmd
    directory = tmp_path / "sandbox"
    subprocess.run([program("mailsuite"), "init", "--dir", str(directory), "--base-port", "41000"],
                   check=True, capture_output=True)
    conf = directory / "mailsuite.conf"
    old = regex.sub(r"\[webmail\]\n(?:[^\[\n].*\n)*\n?", "", conf.read_text())
    conf.write_text(old)
    mailsuite_cmd._add_webmail(str(conf))
    text = conf.read_text()
    assert text.startswith(old)                                    # the user's file kept, the section added
    assert "[webmail]\nlisten = 127.0.0.1:8080\nimap_server = 127.0.0.1:41143\nsmtp_server = 127.0.0.1:41025\n" in text
    mailsuite_cmd._add_webmail(str(conf))
    assert conf.read_text() == text                                # once
