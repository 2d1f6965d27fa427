"""The webmail's page times on a 100,000-message mailbox served by our imapd.

The `webmail` server (waitress) and `imapd -d` run on loopback over a
generated spool; the index cache is warmed first (the first SELECT of a
cold 100,000-message spool is a one-time scan).  Timed over HTTP, each
request alone, the way a browser makes them:

- login (GET the form, POST it: IMAP LOGIN, LIST, STATUS of every folder);
- a page of 50 in date order, at random depths of the mailbox;
- opening a message (its whole text, sanitising, the trace; \\Seen stored after
  the page is sent), then the same messages again, already read;
- the first page by size (the one full FETCH of sizes, no SORT in imapd),
  then further pages from the kept order;
- a search on the subject (one UID SEARCH over every header);
- the same page through webmail.cgi, as an HTTP server runs it per request.

Then the same login, pages and messages through Roundcube (Debian's
package, see roundcube.py) against the same imapd, when it is installed.
Goal: p95 <= 200 ms for a mailbox page.  BENCH_SCALE scales the message
count.
"""

import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import BIN, REPO, generate_spool, sandbox, scaled, world_readable_tempdir

sys.path.insert(0, str(REPO / "tests"))
from procs import start_listener  # noqa: E402
from webmail_support import Browserless  # noqa: E402

COUNT = scaled(100_000)


def percentiles(samples):
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"


def timed(func, *args):
    started = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - started, result


def compare_with_roundcube(directory, imap_port, pages):
    from roundcube import Roundcube, RoundcubeClient, available
    missing = available()
    if missing:
        print(f"Roundcube: not measured: {missing}")
        return
    roundcube = Roundcube(os.path.join(directory, "roundcube"), imap_port, 1)
    try:
        logins = []
        for _ in range(5):
            client = RoundcubeClient(roundcube.base)
            logins.append(timed(client.login, "alice", "alice")[0])
        print(f"Roundcube login       {percentiles(logins)}")
        samples = []
        for _ in range(20):
            seconds, page = timed(client.list_page, random.randint(1, pages))
            assert page.count("add_message_row") >= min(50, COUNT), page[:300]
            samples.append(seconds)
        print(f"Roundcube page of 50  {percentiles(samples)}")
        samples = [timed(client.show, random.randint(1, COUNT))[0] for _ in range(20)]
        print(f"Roundcube open        {percentiles(samples)}")
    finally:
        roundcube.stop()


def main():
    directory = world_readable_tempdir("bench-webmail-")
    procs = []
    try:
        conf = sandbox(os.path.join(directory, "sandbox"))
        generate_spool(os.path.join(directory, "sandbox", "spool", "alice"), COUNT, 2000)
        text = Path(conf).read_text()
        text = re.sub(r"(?m)^listen = 127\.0\.0\.1:\d+$", "listen = 127.0.0.1:0", text)
        Path(conf).write_text(text.replace("log_file = ", "#log_file = "))
        imapd, imap_port = start_listener([str(BIN / "imapd"), "-d", "-C", conf])
        procs.append(imapd)
        from mailsuite.admin.sandbox import set_ports
        set_ports(conf, {"smtp": 1, "pop3": 0, "imap": imap_port, "webmail": 0})
        text = Path(conf).read_text().replace("[webmail]\n", "[webmail]\nfailure_delay = 0\n", 1)
        Path(conf).write_text(text)
        import imaplib
        warm = imaplib.IMAP4("127.0.0.1", imap_port)
        warm.login("alice", "alice")
        cold, _ = timed(warm.select, "INBOX")
        warm.logout()
        print(f"mailbox: {COUNT} messages; first SELECT (builds the index cache): {cold:.1f} s")
        webmail, web_port = start_listener([str(BIN / "webmail"), "-C", conf])
        procs.append(webmail)
        base = f"http://127.0.0.1:{web_port}"

        logins = []
        for _ in range(10):
            client = Browserless(base)
            seconds, (status, _, _) = timed(client.login)
            assert status == 303, status
            logins.append(seconds)
        print(f"login                 {percentiles(logins)}")

        client = Browserless(base)
        client.login()
        pages = max(1, COUNT // 50)
        random.seed(1)
        samples = []
        for _ in range(100):
            seconds, (status, _, body) = timed(client.get, f"/mailbox?page={random.randint(1, pages)}")
            assert status == 200 and body.count(b'name="uid"') >= min(50, COUNT), status
            samples.append(seconds)
        print(f"page of 50 (date)     {percentiles(samples)}")

        uids = [random.randint(1, COUNT) for _ in range(50)]
        for label in ("open a message", "open it again"):
            samples = []
            for uid in uids:
                seconds, (status, _, _) = timed(client.get, f"/message?folder=INBOX&uid={uid}")
                assert status == 200
                samples.append(seconds)
            print(f"{label:22}{percentiles(samples)}")
        print("    (opening unread mail back to back waits for imapd to store the previous \\Seen)")

        first, _ = timed(client.get, "/mailbox?sort=size&order=desc")
        samples = [timed(client.get, f"/mailbox?sort=size&order=desc&page={random.randint(2, pages)}")[0]
                   for _ in range(30)]
        print(f"page by size          first {first * 1000:.0f} ms (every size fetched once), then {percentiles(samples)}")

        seconds, (status, _, _) = timed(client.get, "/mailbox?q=message+99999&field=subject")
        print(f"search on subject     {seconds * 1000:.0f} ms (one UID SEARCH)")

        samples = []
        cookie = "; ".join(f"{c.name}={c.value}" for c in client.jar)
        for _ in range(10):
            env = dict(os.environ, MAILSUITE_CONFIG=conf, REQUEST_METHOD="GET", PATH_INFO="/mailbox",
                       QUERY_STRING=f"page={random.randint(1, pages)}", SCRIPT_NAME="", SERVER_NAME="127.0.0.1",
                       SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1", GATEWAY_INTERFACE="CGI/1.1",
                       HTTP_COOKIE=cookie)
            seconds, done = timed(lambda: subprocess.run([str(BIN / "webmail.cgi")], env=env, capture_output=True))
            assert done.stdout.startswith(b"Status: 200"), done.stdout[:200]
            samples.append(seconds)
        print(f"page via webmail.cgi  {percentiles(samples)} (a process, a login and a SELECT per request)")
        compare_with_roundcube(directory, imap_port, pages)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(20)
        import shutil
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
