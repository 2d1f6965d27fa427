"""mutt, driven in tmux, reads, flags and deletes through imapd.

mutt reaches imapd through its `tunnel` setting (a preauthenticated
session on a pipe).  The test waits for what mutt shows on screen, then
checks the result in the spool and a folder through a second imapd.
"""

import shlex
import subprocess
import time
import uuid

import peers
from imap_support import deliver, imapd, imapd_command

pytestmark = peers.needs("mutt", "tmux")


class Tmux:
    def __init__(self, command, env):
        self.name = "imapd-" + uuid.uuid4().hex[:8]
        self.env = env
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "40", command],
                       check=True, env=env)

    def screen(self):
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def wait_for(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared on mutt's screen:\n{self.screen()}")

    def keys(self, *keys):
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def kill(self):
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def test_mutt_reads_flags_deletes(sandbox, tmp_path):
    for subject in (b"first message", b"second message", b"third message"):
        deliver(sandbox, "alice", b"From: bob@example.org\nSubject: %s\n\nbody of the %s\n" % (subject, subject))
    imap = imapd(sandbox)
    imap.create("Work")
    imap.append("Work", None, None, b"From: carol@example.org\r\nSubject: work item\r\n\r\nwork body\r\n")
    imap.logout()
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f"set tunnel={shlex.quote(shlex.join(imapd_command(sandbox)))}\n"
        'set folder="imap://alice@localhost/"\nset spoolfile="+INBOX"\n'
        'set header_cache=""\nset message_cachedir=""\nset move=no\nset delete=yes\nset quit=yes\n'
        "set sort=date-received\nset mark_old=no\nset wait_key=no\nset beep=no\n"
        "set imap_check_subscribed=no\nset mail_check=1\nset timeout=1\n"
    )
    env = dict(sandbox.env, HOME=str(tmp_path), TERM="xterm", MAIL="")
    mutt = Tmux(f"mutt -n -F {muttrc}", env)
    try:
        mutt.wait_for("third message")
        mutt.keys("Enter")                        # read message 1
        mutt.wait_for("body of the first message")
        mutt.keys("i")                            # back to the index
        mutt.wait_for("second message")
        mutt.keys("j", "F")                       # flag message 2
        mutt.keys("j", "d")                       # delete message 3
        mutt.keys("$")                            # sync: expunge
        _wait_gone(mutt, "third message")
        mutt.keys("c", "=Work", "Enter")          # another folder
        mutt.wait_for("work item")
        mutt.keys("Enter")
        mutt.wait_for("work body")
        mutt.keys("q")
        mutt.keys("q")
        _wait_exit(mutt)
    finally:
        mutt.kill()
    imap = imapd(sandbox)
    imap.select("INBOX")
    typ, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    got = [(d[0], d[1]) for d in data if isinstance(d, tuple)]
    assert [s for _, s in got] == [b"Subject: first message\r\n\r\n", b"Subject: second message\r\n\r\n"]
    assert b"\\Seen" in got[0][0]
    assert b"\\Flagged" in got[1][0]
    imap.select("Work")
    typ, data = imap.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    imap.logout()


def _wait_gone(mutt, text, timeout=30):
    deadline = time.monotonic() + timeout
    while text in mutt.screen():
        assert time.monotonic() < deadline, mutt.screen()
        time.sleep(0.1)


def _wait_exit(mutt, timeout=30):
    deadline = time.monotonic() + timeout
    while subprocess.run(["tmux", "has-session", "-t", mutt.name], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"mutt did not quit:\n{mutt.screen()}")
        time.sleep(0.1)
