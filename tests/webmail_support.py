"""A running mail world for the webmail tests: a sandbox with imapd -d, the SMTP daemon and the webmail.

Every daemon listens on 127.0.0.1 port 0 and is found by the address it
logs; all are stopped by PID at the end.  `Browserless` is a small HTTP
client with a cookie jar that fills in the CSRF token the way a browser
submits a form, for the tests that need no real browser.
"""

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

from conftest import Sandbox, program
from procs import start_listener


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except Exception:
            proc.kill()
            proc.wait()


class MailWorld:
    """A sandbox whose imapd, SMTP daemon and webmail run; `url` is the webmail's."""

    def __init__(self, directory, *, webmail=True, extra=""):
        self.sandbox = Sandbox(directory)
        self.sandbox.clear_spools()
        conf = self.sandbox.conf
        text = open(conf).read()
        text = re.sub(r"(?m)^listen = 127\.0\.0\.1:\d+$", "listen = 127.0.0.1:0", text)
        open(conf, "w").write(text)
        self.procs = []
        try:
            proc, self.imap_port = start_listener([program("imapd"), "-d", "-C", conf])
            self.procs.append(proc)
            proc, self.smtp_port = start_listener([program("sendmail"), "-bD", "-C", conf])
            self.procs.append(proc)
            from mailsuite.admin.sandbox import set_ports
            set_ports(conf, {"smtp": self.smtp_port, "pop3": 0, "imap": self.imap_port, "webmail": 0})
            text = open(conf).read().replace("[webmail]\n", f"[webmail]\nfailure_delay = 0\n{extra}", 1)
            open(conf, "w").write(text)
            if webmail:
                proc, self.web_port = start_listener([program("webmail"), "-C", conf])
                self.procs.append(proc)
                self.url = f"http://127.0.0.1:{self.web_port}"
        except BaseException:
            self.stop()
            raise

    @property
    def conf(self):
        return self.sandbox.conf

    def deliver(self, user, raw):
        self.sandbox.deliver(user, raw)

    def stop(self):
        for proc in reversed(self.procs):
            stop(proc)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browserless:
    """HTTP with a cookie jar; `.form_token(page)` reads the CSRF field the server put in a form."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(self, path, data=None, headers=None):
        """(status, headers, body text or bytes) without following redirects."""
        body = None
        if data is not None:
            body = data if isinstance(data, bytes) else urllib.parse.urlencode(data, doseq=True).encode()
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def get(self, path):
        return self.request(path)

    def post(self, path, data, headers=None):
        return self.request(path, data, headers)

    def token(self, page):
        if isinstance(page, str):
            page = page.encode()
        found = re.search(rb'name="csrf" value="([^"]+)"', page)
        return found.group(1).decode() if found else ""

    def login(self, user="alice", password=None):
        _, _, page = self.get("/login")
        status, headers, body = self.post("/login", {"user": user, "password": password or user,
                                                     "csrf": self.token(page)})
        return status, headers, body
