"""Roundcube from Debian's package (roundcube-core, roundcube-sqlite3, php-cgi), served for the webmail benchmark.

A private configuration directory (ROUNDCUBE_CONFIG_DIR, which Roundcube
reads instead of /etc/roundcube) points it at the benchmark's imapd and a
throw-away SQLite database; lighttpd runs php-cgi over FastCGI on a
socket the benchmark binds to port 0 (LISTEN_FDS).  Nothing of the
machine's Roundcube configuration is touched.  `available()` says why
not when the packages are missing.
"""

import http.cookiejar
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

INSTALL = Path("/var/lib/roundcube")
PACKAGES = "roundcube-core roundcube-sqlite3 php-cgi php-sqlite3 lighttpd"

CONFIG = """<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///{dir}/roundcube.db?mode=0600';
$config['imap_host'] = '127.0.0.1:{imap_port}';
$config['smtp_host'] = '127.0.0.1:{smtp_port}';
$config['des_key'] = 'mailsuite-bench-0123456789';
$config['temp_dir'] = '{dir}/temp/';
$config['log_dir'] = '{dir}/logs/';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['login_rate_limit'] = 0;
$config['mail_pagesize'] = 50;
$config['enable_installer'] = false;
"""

LIGHTTPD = """\
server.document-root = "{install}/public_html"
server.bind = "127.0.0.1"
server.port = {port}
server.systemd-socket-activation = "enable"
server.errorlog = "{dir}/error.log"
server.follow-symlink = "enable"
server.modules = ("mod_fastcgi")
index-file.names = ("index.php")
fastcgi.server = (".php" => ((
    "bin-path" => "/usr/bin/php-cgi",
    "socket" => "{dir}/php.socket",
    "max-procs" => 2,
    "bin-environment" => ("ROUNDCUBE_CONFIG_DIR" => "{dir}/config", "PHP_FCGI_CHILDREN" => "2"),
)))
"""


def available():
    """None when Roundcube can run here, else what is missing."""
    if not (INSTALL / "public_html" / "index.php").exists() or not shutil.which("php-cgi") \
            or not shutil.which("lighttpd"):
        return f"Roundcube is not installed (apt-get install {PACKAGES})"
    return None


class Roundcube:
    def __init__(self, directory, imap_port, smtp_port):
        self.dir = Path(directory)
        config = self.dir / "config"
        config.mkdir(parents=True)
        for name in ("defaults.inc.php", "mimetypes.php"):
            shutil.copy(Path("/etc/roundcube") / name, config / name)
        (config / "config.inc.php").write_text(CONFIG.format(dir=self.dir, imap_port=imap_port, smtp_port=smtp_port))
        for name in ("temp", "logs"):
            (self.dir / name).mkdir()
        db = sqlite3.connect(self.dir / "roundcube.db")
        db.executescript((INSTALL / "SQL" / "sqlite.initial.sql").read_text())
        db.close()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        (self.dir / "lighttpd.conf").write_text(LIGHTTPD.format(install=INSTALL, dir=self.dir, port=self.port))

        def as_fd_3():
            os.dup2(listener.fileno(), 3)
            os.set_inheritable(3, True)
        self.process = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec lighttpd -D -f "$0"', str(self.dir / "lighttpd.conf")],
            preexec_fn=as_fd_3, pass_fds=(3,), stderr=subprocess.DEVNULL)
        listener.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("lighttpd for Roundcube did not start: "
                                       + (self.dir / "error.log").read_text(errors="replace"))
                time.sleep(0.1)
        self.base = f"http://127.0.0.1:{self.port}/"

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RoundcubeClient:
    """Roundcube's login form and its AJAX calls, as its own JavaScript makes them."""

    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def _open(self, query, data=None, headers=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + "?" + urllib.parse.urlencode(query), data=body,
                                         headers=headers or {})
        with self.opener.open(request, timeout=120) as response:
            return response.read().decode("utf-8", "replace")

    def login(self, user, password):
        page = self._open({"_task": "login"})
        token = re.search(r'name="_token" value="([^"]+)"', page).group(1)
        page = self._open({"_task": "login"}, {"_token": token, "_task": "login", "_action": "login",
                                               "_timezone": "UTC", "_url": "", "_user": user, "_pass": password})
        found = re.search(r'"request_token":"([^"]+)"', page)
        if not found:
            raise RuntimeError("Roundcube login failed")
        self.token = found.group(1)

    def list_page(self, number):
        return self._open({"_task": "mail", "_action": "list", "_mbox": "INBOX", "_page": number, "_remote": 1},
                          headers={"X-Roundcube-Request": self.token, "X-Requested-With": "XMLHttpRequest"})

    def show(self, uid):
        return self._open({"_task": "mail", "_action": "show", "_uid": uid, "_mbox": "INBOX"})
