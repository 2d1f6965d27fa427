"""webmail.cgi under a real HTTP server: Debian's lighttpd with mod_cgi, configured by etc/lighttpd/webmail.conf.

lighttpd runs in the foreground (-D) on a socket the test binds to port 0
and hands over the systemd way (LISTEN_FDS), so no port is guessed; it is
stopped by PID at the end.  The CGI program gets its configuration from
MAILSUITE_CONFIG, set by mod_setenv as an administrator would.
"""

import os
import re
import signal
import socket
import subprocess
import time

import peers
import pytest
from conftest import REPO, program
from mta_helpers import spool_messages
from test_webmail import message, wait_for
from webmail_support import Browserless, MailWorld

pytestmark = peers.needs("lighttpd")

CONF = """\
server.document-root = "{root}/www"
server.bind = "127.0.0.1"
server.port = {port}
server.systemd-socket-activation = "enable"
server.errorlog = "{root}/error.log"
include "{root}/webmail.conf"
"""


@pytest.fixture
def lighttpd(tmp_path):
    world = MailWorld(tmp_path / "sandbox", webmail=False)
    root = tmp_path / "http"
    (root / "www").mkdir(parents=True)
    example = (REPO / "etc" / "lighttpd" / "webmail.conf").read_text()      # the example, as shipped
    (root / "webmail.conf").write_text(example.replace("/usr/local/bin/webmail.cgi", program("webmail.cgi"))
                                       .replace("/etc/mailsuite/mailsuite.conf", world.conf))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    (root / "lighttpd.conf").write_text(CONF.format(root=root, port=port, conf=world.conf))

    def as_fd_3():
        os.dup2(listener.fileno(), 3)
        os.set_inheritable(3, True)
    proc = subprocess.Popen(["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec {peers.require("lighttpd")} -D -f "$0"',
                             str(root / "lighttpd.conf")], preexec_fn=as_fd_3, pass_fds=(3,),
                            stderr=subprocess.PIPE)
    listener.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.1)
        yield world, f"http://127.0.0.1:{port}/webmail", root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        world.stop()


def test_webmail_cgi_under_lighttpd(lighttpd):
    world, base, root = lighttpd
    world.deliver("alice", message("through CGI"))
    client = Browserless(base)
    status, headers, _ = client.login()
    assert status == 303, (root / "error.log").read_text() + _.decode()
    assert headers["Location"] == "/webmail/mailbox"
    cookie = next(c for c in headers.get_all("Set-Cookie") if c.startswith("webmail_session="))
    assert "Path=/webmail;" in cookie and "HttpOnly" in cookie
    status, headers, page = client.get("/mailbox")
    assert status == 200 and b"through CGI" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    uid = re.search(rb"uid=(\d+)", page).group(1).decode()
    status, _, page = client.get(f"/message?folder=INBOX&uid={uid}")
    assert status == 200 and b"Hello." in page
    status, _, _ = client.post("/send", {"csrf": client.token(page), "to": "bob@localhost", "subject": "from CGI",
                                         "body": "hi"})
    assert status == 303
    wait_for(lambda: [m for m in spool_messages(world.sandbox.spool("bob")) if m["Subject"] == "from CGI"])
    status, _, _ = client.post("/action", {"csrf": "forged", "folder": "INBOX", "uid": uid, "op": "delete"})
    assert status == 403
    assert [m["Subject"] for m in spool_messages(world.sandbox.spool("alice"))] == ["through CGI"]
