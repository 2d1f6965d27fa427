"""The webmail over HTTP against our imapd and SMTP daemon: every page, every action, every defence.

The browser tests (test_webmail_browser.py) show the same in Chromium;
these check the exact HTTP: status codes, headers, cookies, what reached
the spools.
"""

import email
import email.policy
import re
import time

import pytest
from conftest import mbox_messages
from mta_helpers import spool_messages
from webmail_support import Browserless, MailWorld


def message(subject, *, sender="Bob <bob@localhost>", body="Hello.\n", extra="", date="Mon, 1 Jan 2024 10:00:00 +0000"):
    return (f"From: {sender}\nTo: alice@localhost\nSubject: {subject}\nDate: {date}\n"
            f"Message-ID: <{abs(hash(subject))}@localhost>\n{extra}\n{body}").encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = MailWorld(tmp_path_factory.mktemp("webmail") / "sandbox")
    yield w
    w.stop()


@pytest.fixture
def alice(world):
    world.sandbox.clear_spools()
    client = Browserless(world.url)
    status, headers, _ = client.login()
    assert status == 303 and headers["Location"] == "/mailbox"
    return client


def body(response):
    return response[2].decode("utf-8")


def newest_uid(client):
    """The UID of the newest message in the INBOX page (UIDs continue across an emptied mailbox)."""
    return max(int(uid) for uid in re.findall(r"uid=(\d+)", body(client.get("/mailbox"))))


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return value


def test_login_sets_a_safe_session_cookie_and_logout_ends_it(world):
    client = Browserless(world.url)
    status, headers, page = client.get("/login")
    assert status == 200 and b'name="csrf"' in page
    csp = headers["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "same-origin"
    status, headers, _ = client.login()
    cookie = next(c for c in headers.get_all("Set-Cookie") if c.startswith("webmail_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie     # plain HTTP here
    value = cookie.split(";")[0].split("=", 1)[1]
    assert "alice" not in value                                                     # the pad, never the password
    sid, pad = value.split(".")
    assert len(pad) >= 64                                                           # one-time pad of a padded password
    status, _, page = client.get("/mailbox")
    assert status == 200
    status, headers, _ = client.post("/logout", {"csrf": client.token(page)})
    assert status == 303 and "/login" in headers["Location"]
    status, headers, _ = client.get("/mailbox")
    assert status == 303 and headers["Location"].startswith("/login")


def test_the_session_database_holds_no_password_and_no_session_id(world):
    import sqlite3
    client = Browserless(world.url)
    client.login()
    cookie = next(c.value for c in client.jar if c.name == "webmail_session")
    db = sqlite3.connect(world.sandbox.dir / "state" / "webmail.sqlite")
    rows = db.execute("SELECT id_hash, sealed FROM sessions").fetchall()
    db.close()
    assert rows and all(b"alice" not in sealed for _, sealed in rows)
    assert all(cookie.split(".")[0] not in id_hash for id_hash, _ in rows)
    mode = (world.sandbox.dir / "state" / "webmail.sqlite").stat().st_mode & 0o777
    assert mode == 0o600


def test_wrong_password_is_refused_then_limited(world):
    client = Browserless(world.url)
    for _ in range(5):
        status, _, page = client.login("bob", "wrong")
        assert status == 403 and b"Wrong user name or password" in page
    status, _, page = client.login("bob", "bob")                 # right, but bob is locked out for now
    assert status == 429 and b"Too many failed logins" in page
    status, _, _ = client.login("alice", "alice")                 # another user from the same address: also
    assert status == 429                                          # refused, the address is locked out too
    import sqlite3
    db = sqlite3.connect(world.sandbox.dir / "state" / "webmail.sqlite")
    db.execute("DELETE FROM failures")
    db.commit()
    db.close()
    assert Browserless(world.url).login("bob", "bob")[0] == 303


def test_a_forged_cross_site_post_is_refused(world, alice):
    world.deliver("alice", message("keep me"))
    _, _, page = alice.get("/mailbox")
    token = alice.token(page)
    # no token
    status, _, _ = alice.post("/action", {"folder": "INBOX", "uid": "1", "op": "delete"})
    assert status == 403
    # the right token, from another site
    status, _, _ = alice.post("/action", {"folder": "INBOX", "uid": "1", "op": "delete", "csrf": token},
                              headers={"Origin": "http://evil.example"})
    assert status == 403
    # a login form posted from elsewhere (login CSRF)
    status, _, _ = Browserless(world.url).post("/login", {"user": "alice", "password": "alice", "csrf": "x"})
    assert status == 403
    assert [m["Subject"] for m in spool_messages(world.sandbox.spool("alice"))] == ["keep me"]


def test_paging_and_sorting_ask_for_one_page(world, alice):
    for i in range(120):
        world.deliver("alice", message(f"number {i:03d}", sender=f"S{(i * 7) % 120:03d} <s{(i * 7) % 120:03d}@x.test>",
                                       body="x" * (i * 10)))
    page = body(alice.get("/mailbox"))
    subjects = re.findall(r"number (\d{3})", page)
    assert subjects == [f"{i:03d}" for i in range(119, 69, -1)]                 # newest first, 50
    assert "page 1 of 3" in page
    page = body(alice.get("/mailbox?page=3"))
    assert re.findall(r"number (\d{3})", page) == [f"{i:03d}" for i in range(19, -1, -1)]
    page = body(alice.get("/mailbox?sort=date&order=asc"))
    assert re.findall(r"number (\d{3})", page)[:3] == ["000", "001", "002"]
    page = body(alice.get("/mailbox?sort=size&order=desc"))
    assert re.findall(r"number (\d{3})", page)[:3] == ["119", "118", "117"]
    page = body(alice.get("/mailbox?sort=from&order=asc"))
    senders = re.findall(r"S(\d{3}) &lt;", page)
    assert senders == sorted(senders) and senders[0] == "000"
    page = body(alice.get("/mailbox?sort=subject&order=desc&page=2"))
    assert re.findall(r"number (\d{3})", page)[0] == "069"


def test_search(world, alice):
    world.deliver("alice", message("quarterly report", body="the numbers\n"))
    world.deliver("alice", message("lunch", sender="Carol <carol@x.test>", body="about the report\n"))
    world.deliver("alice", message("holiday"))
    page = body(alice.get("/mailbox?q=report&field=subject"))
    assert "quarterly report" in page and "lunch" not in page and "1 message matching" in page
    page = body(alice.get("/mailbox?q=report&field=text"))
    assert "quarterly report" in page and "lunch" in page and "holiday" not in page
    page = body(alice.get("/mailbox?q=carol&field=from"))
    assert "lunch" in page and "holiday" not in page


def test_reading_marks_read_and_escapes_everything(world, alice):
    world.deliver("alice", message("<b>not bold</b>", sender='"<script>x</script>" <bob@localhost>',
                                   body="<img src=x onerror=alert(1)>\n"))
    page = body(alice.get("/mailbox"))
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert "<script>" not in page
    uid = newest_uid(alice)
    page = body(alice.get(f"/message?folder=INBOX&uid={uid}"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert 'class="seen"' in body(alice.get("/mailbox"))        # stored after the page was sent, before this one
    assert "Status: RO" in world.sandbox.spool("alice").read_text()


HOSTILE_HTML = """\
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/plain

plain version
--b
Content-Type: text/html

<html><head><style>body{display:none}</style><script>document.title='pwned'</script>
<meta http-equiv="refresh" content="0;url=http://evil.example/"></head>
<body onload="document.title='pwned'"><p>Visible text</p>
<a href="javascript:document.title='pwned'" id="js">click</a>
<a href="https://example.org/" id="ok">fine link</a>
<img src="https://tracker.example/pixel.gif" alt="tracker">
<div style="position:fixed;top:0;left:0;width:100%;height:100%;background:red">overlay</div>
<form action="http://evil.example/"><input name="password"></form>
<svg onload="alert(1)"><script>alert(2)</script></svg>
<iframe src="http://evil.example/"></iframe>
</body></html>
--b--
"""


def test_html_is_sanitised_and_remote_images_wait(world, alice):
    world.deliver("alice", message("hostile", extra=HOSTILE_HTML.split("\n\n", 1)[0] + "\n", body=HOSTILE_HTML.split("\n\n", 1)[1]))
    uid = newest_uid(alice)
    status, headers, raw = alice.get(f"/message?folder=INBOX&uid={uid}")
    page = raw.decode()
    html = page[page.index('id="body"'):page.index("</div>", page.index('id="body"'))]
    for bad in ("<script", "onload", "javascript:", "<style", "style=", "<meta", "<form", "<iframe", "<svg",
                "tracker.example"):
        assert bad not in html, bad
    assert "Visible text" in html and 'href="https://example.org/"' in html and "noopener" in html
    assert "1 remote image blocked" in page
    assert "img-src 'self' data:;" in headers["Content-Security-Policy"]
    status, headers, raw = alice.get(f"/message?folder=INBOX&uid={uid}&images=1")
    assert 'src="https://tracker.example/pixel.gif"' in raw.decode()
    assert "https:" in headers["Content-Security-Policy"]


def attached_message():
    outer = email.message.EmailMessage()
    outer["From"] = "Bob <bob@localhost>"
    outer["To"] = "alice@localhost"
    outer["Subject"] = "with attachments"
    outer.set_content("see attached\n")
    outer.add_attachment(b"%PDF-1.4 fake\n", maintype="application", subtype="pdf", filename="report.pdf")
    outer.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html",
                         filename="../../etc/évil\".html")
    return outer.as_bytes()


def test_attachments_download_with_safe_names_and_types(world, alice):
    world.deliver("alice", attached_message())
    uid = newest_uid(alice)
    page = body(alice.get(f"/message?folder=INBOX&uid={uid}"))
    links = re.findall(r'href="(/part\?[^"]+)"', page)
    assert len(links) == 2 and "report.pdf" in page
    status, headers, data = alice.get(links[0].replace("&amp;", "&"))
    assert status == 200 and data == b"%PDF-1.4 fake\n" and headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
    status, headers, data = alice.get(links[1].replace("&amp;", "&"))
    disposition = headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="_vil.html"') and "%C3%A9vil.html" in disposition
    assert "/" not in disposition.split("filename=")[1].split(";")[0]
    status, headers, _ = alice.get(links[1].replace("&amp;", "&") + "&inline=1")     # html never inline
    assert headers["Content-Disposition"].startswith("attachment;")


def multipart_form(fields, files):
    boundary = "----webmailtest"
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, filename, kind, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: {kind}\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_compose_with_attachment_reaches_bob_and_sent(world, alice):
    _, _, page = alice.get("/compose")
    data, headers = multipart_form({"csrf": alice.token(page), "to": "Bob <bob@localhost>", "cc": "", "bcc": "",
                                    "subject": "Grüße", "body": "Hello Bob,\nsee the file.\n"},
                                   [("attachment", "notes.txt", "text/plain", b"line one\n")])
    status, location, _ = alice.post("/send", data, headers)
    assert status == 303, _
    [got] = wait_for(lambda: spool_messages(world.sandbox.spool("bob")))
    parsed = email.message_from_bytes(got.as_bytes(), policy=email.policy.default)
    assert str(parsed["Subject"]) == "Grüße" and parsed["From"] == "alice@localhost"
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "notes.txt" and attachment.get_content() == "line one\n"
    sent = mbox_messages(world.sandbox.home("alice") / "mail" / "Sent")
    assert [m["Subject"] for m in sent] == ["=?utf-8?q?Gr=C3=BC=C3=9Fe?="] or \
        [str(email.message_from_bytes(m.as_bytes(), policy=email.policy.default)["Subject"]) for m in sent] == ["Grüße"]


def test_reply_reply_all_and_forward(world, alice):
    world.deliver("alice", email.message_from_bytes(attached_message()).as_bytes().replace(
        b"To: alice@localhost", b"To: alice@localhost, Carol <carol@localhost>"))
    uid = newest_uid(alice)
    page = body(alice.get(f"/compose?mode=reply&folder=INBOX&uid={uid}"))
    assert 'value="Re: with attachments"' in page and 'value="Bob &lt;bob@localhost&gt;"' in page
    assert "&gt; see attached" in page
    page = body(alice.get(f"/compose?mode=replyall&folder=INBOX&uid={uid}"))
    assert "carol@localhost" in page and 'name="cc" id="cc" value="Carol &lt;carol@localhost&gt;"' in page
    page = body(alice.get(f"/compose?mode=forward&folder=INBOX&uid={uid}"))
    assert 'value="Fwd: with attachments"' in page and "attachments go along" in page
    token = alice.token(page)
    forward_uid = re.search(r'name="forward_uid" value="(\d+)"', page).group(1)
    status, _, _ = alice.post("/send", {"csrf": token, "to": "bob@localhost", "subject": "Fwd: with attachments",
                                        "body": "fyi", "forward_uid": forward_uid, "folder": "INBOX"})
    assert status == 303
    [got] = wait_for(lambda: spool_messages(world.sandbox.spool("bob")))
    names = [p.get_filename() for p in got.walk() if p.get_filename()]
    assert "report.pdf" in names
    page = body(alice.get(f"/compose?mode=reply&folder=INBOX&uid={uid}"))
    status, _, _ = alice.post("/send", {"csrf": token, "to": "bob@localhost", "subject": "Re: with attachments",
                                        "body": "thanks", "reply_uid": str(uid), "folder": "INBOX",
                                        "in_reply_to": "<x@localhost>"})
    assert status == 303
    wait_for(lambda: len(spool_messages(world.sandbox.spool("bob"))) == 2)
    assert "A" in spool_messages(world.sandbox.spool("alice"))[0].get("X-Status", "")     # \Answered


def test_flag_read_unread_move_and_delete(world, alice):
    for subject in ("one", "two", "three"):
        world.deliver("alice", message(subject))
    page = body(alice.get("/mailbox"))
    token = alice.token(page)
    form = {"csrf": token, "folder": "INBOX"}
    one, two, three = sorted({int(u) for u in re.findall(r"uid=(\d+)", page)})
    assert alice.post("/action", {**form, "uid": [str(one), str(two)], "op": "flag"})[0] == 303
    assert alice.post("/action", {**form, "uid": str(two), "op": "read"})[0] == 303
    state = {m["Subject"]: (m.get("X-Status", ""), m.get("Status", "")) for m in spool_messages(world.sandbox.spool("alice"))}
    assert "F" in state["one"][0] and "F" in state["two"][0] and "F" not in state["three"][0]
    assert "R" in state["two"][1] and "R" not in state["one"][1]
    assert alice.post("/action", {**form, "uid": str(two), "op": "unread"})[0] == 303
    assert alice.post("/action", {**form, "uid": str(one), "op": "unflag"})[0] == 303
    # a folder to move to
    (world.sandbox.home("alice") / "mail" / "Archive").write_bytes(b"")
    status, headers, _ = alice.post("/action", {**form, "uid": str(three), "op": "move", "target": "Archive"})
    assert status == 303 and "notice=moved" in headers["Location"]
    assert [m["Subject"] for m in mbox_messages(world.sandbox.home("alice") / "mail" / "Archive")] == ["three"]
    status, _, _ = alice.post("/action", {**form, "uid": str(one), "op": "delete"})
    assert status == 303
    assert [m["Subject"] for m in spool_messages(world.sandbox.spool("alice"))] == ["two"]
    assert [m["Subject"] for m in mbox_messages(world.sandbox.home("alice") / "mail" / "Trash")] == ["one"]
    [trashed] = re.findall(r"uid=(\d+)", body(alice.get("/mailbox?folder=Trash")))
    status, _, _ = alice.post("/action", {"csrf": token, "folder": "Trash", "uid": trashed, "op": "delete"})
    assert status == 303
    assert len(mbox_messages(world.sandbox.home("alice") / "mail" / "Trash")) == 0


def test_no_open_redirect(world, alice):
    page = body(alice.get("/mailbox"))
    token = alice.token(page)
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        status, headers, _ = alice.post("/action", {"csrf": token, "folder": "INBOX", "op": "read", "uid": "1",
                                                    "next": evil, "from_message": evil, "page": evil})
        assert status == 303 and headers["Location"].startswith("/") and "evil" not in headers["Location"]
    status, headers, _ = Browserless(world.url).get("/mailbox?next=https://evil.example/")
    assert "evil" not in headers["Location"]


def test_unknown_pages_and_methods(world, alice):
    assert alice.get("/nope")[0] == 404
    assert alice.get("/send")[0] == 405
    assert alice.get("/message?folder=INBOX&uid=999")[0] == 404


def test_cookies_are_secure_over_https(sandbox):
    """In-process, as a server that terminates TLS hands the request on (wsgi.url_scheme, CGI's HTTPS=on)."""
    import io

    from mailsuite.webmail.app import Application
    application = Application(sandbox.cfg, pooled=False)
    for extra in ({"wsgi.url_scheme": "https"}, {"wsgi.url_scheme": "http", "HTTPS": "on"}):
        seen = {}

        def start_response(status, headers):
            seen["status"], seen["headers"] = status, headers
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/login", "SCRIPT_NAME": "", "QUERY_STRING": "",
                   "SERVER_NAME": "mail.example", "SERVER_PORT": "443", "wsgi.input": io.BytesIO(), **extra}
        b"".join(application(environ, start_response))
        cookies = [v for k, v in seen["headers"] if k == "Set-Cookie"]
        assert seen["status"].startswith("200") and cookies
        assert all("; Secure" in c and "HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
