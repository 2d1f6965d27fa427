"""The webmail in a real browser: headless Chromium driven by Selenium (Debian's chromium and chromium-driver).

A person's path through it (log in, read, compose with an attachment,
reply, move, search) and the attacks a webmail meets: HTML mail with
script, event handlers, javascript: links and CSS tricks must run and
restyle nothing; a form posted from another site must change nothing.
Screenshots of the main pages are written to $MAILSUITE_SCREENSHOTS (the
README's copies live in docs/screenshots/: run this file with
MAILSUITE_SCREENSHOTS=docs/screenshots to renew them), else to a
temporary directory.
"""

import http.server
import os
import tempfile
import threading
from pathlib import Path

import peers
import pytest
from mta_helpers import spool_messages
from test_webmail import HOSTILE_HTML, message, wait_for
from webmail_support import MailWorld

pytestmark = peers.needs("chromium", "chromedriver")

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,860")

TRACED = (b"Received: from mx.relay.test (mx.relay.test [192.0.2.20]) by mail.localhost (Postfix) with ESMTPS id "
          b"9F1E2C0A1B for <alice@localhost>; Mon, 1 Jan 2024 10:04:12 +0000\n"
          b"Received: from client.test (client.test [192.0.2.10]) by mx.relay.test (Exim 4.96) with esmtp "
          b"id 1rNqYx-000123-AB; Mon, 1 Jan 2024 10:00:04 +0000\n"
          b"Received: by client.test (mailsuite, from userid 1000) id 18A2B3C4; Mon, 1 Jan 2024 10:00:02 +0000\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = MailWorld(tmp_path_factory.mktemp("browser") / "sandbox")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    directory = Path(os.environ.get("MAILSUITE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = peers.require("chromium")
    profile = tempfile.mkdtemp(prefix="webmail-chromium-")
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(peers.require("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        import shutil
        shutil.rmtree(profile, ignore_errors=True)


def by_id(driver, name):
    return driver.find_element("id", name)


def screenshot(driver, path):
    driver.execute_script("window.getSelection().removeAllRanges()")      # a click may leave text selected
    driver.save_screenshot(str(path))


def log_in(driver, world, user="alice"):
    driver.delete_all_cookies()
    driver.get(world.url + "/login")
    by_id(driver, "user").send_keys(user)
    by_id(driver, "password").send_keys(user)
    by_id(driver, "login").click()
    wait_for(lambda: "/mailbox" in driver.current_url, timeout=30)


def test_log_in_read_and_see_the_trace(world, browser, shots):
    world.sandbox.clear_spools()
    world.deliver("alice", message("Lunch on Friday?", sender="Bob Example <bob@localhost>",
                                   body="Shall we try the new place?\n\nBob\n"))
    world.deliver("alice", message("Quarterly report", sender="Carol <carol@example.org>",
                                   extra=TRACED.decode(), date="Mon, 1 Jan 2024 10:00:00 +0000",
                                   body="The figures are attached to the next mail.\n"))
    world.deliver("alice", message("Welcome", sender="Postmaster <postmaster@localhost>"))
    browser.get(world.url + "/login")
    screenshot(browser, shots / "login.png")
    log_in(browser, world)
    rows = browser.find_elements("css selector", "table.list tbody tr")
    assert len(rows) == 3 and "Welcome" in rows[0].text
    assert browser.find_element("css selector", "nav.folders .unseen").text == "3"
    screenshot(browser, shots / "mailbox.png")
    browser.find_element("link text", "Quarterly report").click()
    assert by_id(browser, "subject").text == "Quarterly report"
    slowest = browser.find_elements("css selector", "section.trace rect.slowest")
    assert len(slowest) == 1
    assert "slowest hop: #3 (4 min 8 s), the message waited at mx.relay.test" in by_id(browser, "trace").text
    screenshot(browser, shots / "message.png")


def test_compose_with_an_attachment_then_reply(world, browser, shots, tmp_path):
    world.sandbox.clear_spools()
    world.deliver("alice", message("Can you send the plan?", sender="Bob <bob@localhost>"))
    log_in(browser, world)
    attachment = tmp_path / "plan.txt"
    attachment.write_text("step one\nstep two\n")
    browser.get(world.url + "/compose")
    by_id(browser, "to").send_keys("bob@localhost")
    by_id(browser, "subject").send_keys("The plan")
    by_id(browser, "body").send_keys("Here it is.\n")
    by_id(browser, "attachment").send_keys(str(attachment))
    screenshot(browser, shots / "compose.png")
    by_id(browser, "send").click()
    wait_for(lambda: "notice=sent" in browser.current_url, timeout=60)
    [sent] = wait_for(lambda: spool_messages(world.sandbox.spool("bob")))
    assert sent["Subject"] == "The plan"
    assert [p.get_filename() for p in sent.walk() if p.get_filename()] == ["plan.txt"]
    browser.find_element("link text", "Can you send the plan?").click()
    by_id(browser, "reply").click()
    assert by_id(browser, "subject").get_attribute("value") == "Re: Can you send the plan?"
    by_id(browser, "body").send_keys("Sent it a minute ago.")
    by_id(browser, "send").click()
    wait_for(lambda: len(spool_messages(world.sandbox.spool("bob"))) == 2, timeout=60)
    assert spool_messages(world.sandbox.spool("bob"))[1]["Subject"] == "Re: Can you send the plan?"


def test_move_and_search(world, browser):
    from selenium.webdriver.support.select import Select
    world.sandbox.clear_spools()
    (world.sandbox.home("alice") / "mail" / "Projects").write_bytes(b"")
    world.deliver("alice", message("project kickoff"))
    world.deliver("alice", message("coffee?"))
    log_in(browser, world)
    browser.find_element("css selector", "input[name=q]").send_keys("kickoff\n")
    wait_for(lambda: "q=kickoff" in browser.current_url)
    rows = browser.find_elements("css selector", "table.list tbody tr")
    assert [r.text for r in rows if "kickoff" in r.text] and not [r for r in rows if "coffee" in r.text]
    rows[0].find_element("css selector", "input[type=checkbox]").click()
    Select(browser.find_element("css selector", "#messages select[name=target]")).select_by_visible_text("Projects")
    browser.find_element("css selector", "#messages button[value=move]").click()
    wait_for(lambda: "notice=moved" in browser.current_url)
    assert [m["Subject"] for m in spool_messages(world.sandbox.home("alice") / "mail" / "Projects")] == ["project kickoff"]
    assert [m["Subject"] for m in spool_messages(world.sandbox.spool("alice"))] == ["coffee?"]


def test_hostile_html_mail_runs_nothing(world, browser, shots):
    from selenium.common.exceptions import NoAlertPresentException
    world.sandbox.clear_spools()
    header, text = HOSTILE_HTML.split("\n\n", 1)
    world.deliver("alice", message("<script>document.title='pwned'</script>hostile", extra=header + "\n", body=text))
    log_in(browser, world)
    browser.find_element("css selector", "td.subject a").click()
    wait_for(lambda: browser.find_elements("id", "body"))
    shown = "<script>document.title='pwned'</script>hostile — mailsuite"     # the subject as text, nothing ran
    assert browser.title == shown
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    overlay = [e for e in browser.find_elements("css selector", "#body div") if "overlay" in e.text]
    assert overlay and overlay[0].value_of_css_property("position") != "fixed"
    assert by_id(browser, "body").is_displayed()                          # the <style> did not hide it
    assert browser.find_elements("css selector", "#body script, #body iframe, #body form, #body svg") == []
    [link] = [a for a in browser.find_elements("css selector", "#body a") if a.text == "click"]
    assert not (link.get_attribute("href") or "").startswith("javascript:")
    link.click()
    assert browser.title == shown
    assert browser.find_elements("css selector", "#body img[src*=tracker]") == []
    assert browser.execute_script("return document.scripts.length") == 0
    screenshot(browser, shots / "hostile.png")


class _Attacker(http.server.BaseHTTPRequestHandler):
    """A page on another origin that posts a delete to the webmail as soon as it loads."""

    target = ""

    def do_GET(self):
        page = (f'<form id="f" method="post" action="{self.target}/action">'
                '<input name="folder" value="INBOX"><input name="uid" value="1"><input name="op" value="delete">'
                '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>')
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


def test_a_forged_cross_site_post_is_refused(world, browser):
    world.sandbox.clear_spools()
    world.deliver("alice", message("do not delete me"))
    log_in(browser, world)
    _Attacker.target = world.url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for host in ("127.0.0.1", "localhost"):                    # same site (cookie sent), then another site
            browser.get(f"http://{host}:{server.server_port}/")
            wait_for(lambda: "/action" in browser.current_url, timeout=30)
            assert "Refused" in browser.find_element("css selector", "p.error").text
    finally:
        server.shutdown()
        server.server_close()
    assert [m["Subject"] for m in spool_messages(world.sandbox.spool("alice"))] == ["do not delete me"]
