"""A sandbox for `mail` tests: config, users, a recording sendmail, a terminal.

The recording sendmail is a shell script that writes each call's argument
list and standard input to numbered files, so a test sees exactly what
`mail` handed over.  `spawn()` runs `mail` on a pseudo-terminal through
pexpect, the way a person would meet it.
"""

import os
import re
import subprocess
from pathlib import Path

from conftest import program

FAKE_SENDMAIL = """#!/bin/sh
# Records one submission: argv (one per line) and the message on stdin.
dir=$(dirname "$0")/sent
mkdir -p "$dir"
n=$(ls "$dir" | grep -c '\\.msg$')
printf '%s\\n' "$@" > "$dir/$n.argv"
cat > "$dir/$n.msg"
if [ -e "$(dirname "$0")/sendmail-fails" ]; then
    echo "sendmail: fatal: queue file write error" >&2
    exit 75
fi
exit 0
"""


class MailSandbox:
    """A `mailsuite init` sandbox whose sendmail is the recording script."""

    def __init__(self, root):
        from mailsuite.admin import sandbox
        self.dir = Path(root)
        self.conf = sandbox.init(str(self.dir), tls=False)
        for user in ("alice", "bob"):
            self.spool(user).write_bytes(b"")           # no welcome message
        sendmail = self.dir / "fake-sendmail"
        sendmail.write_text(FAKE_SENDMAIL)
        sendmail.chmod(0o755)
        text = Path(self.conf).read_text()
        text = re.sub(r"(?m)^sendmail = .*$", "", text)
        if "[mail]" not in text:
            text += "\n[mail]\n"
        text = text.replace("[mail]\n", f"[mail]\nsendmail = {sendmail}\nrc_file =\n")
        Path(self.conf).write_text(text)
        self.env = dict(os.environ, MAILSUITE_CONFIG=self.conf, USER="alice",
                        PAGER="cat", EDITOR="false", VISUAL="false", LC_ALL="C.UTF-8", TERM="dumb",
                        HOME=str(self.home("alice")))
        self.env.pop("MAILRC", None)

    def set_option(self, section, key, value):
        """Change one key of the sandbox's configuration."""
        text = Path(self.conf).read_text()
        text = re.sub(rf"(?m)^{key} = .*\n", "", text)
        Path(self.conf).write_text(text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n"))

    def spool(self, user="alice"):
        return self.dir / "spool" / user

    def home(self, user="alice"):
        return self.dir / "home" / user

    def mailrc(self, text, user="alice"):
        (self.home(user) / ".mailrc").write_text(text)

    # --- delivery and sending ---

    def deliver(self, message, user="alice", sender="bob@localhost"):
        """Deliver MESSAGE (bytes) with the project's mail.local."""
        done = subprocess.run([program("mail.local"), "-C", self.conf, "-f", sender, user],
                              input=message, env=self.env, capture_output=True)
        assert done.returncode == 0, done.stderr

    def mail(self, *args, input=b"", user="alice"):
        return subprocess.run([program("mail"), "-C", self.conf, "-u", user, *args],
                              input=input, env=self.env, capture_output=True)

    def spawn(self, *args, user="alice", rows=24, cols=100):
        import pexpect
        child = pexpect.spawn(program("mail"), ["-C", self.conf, "-u", user, *args],
                              env=self.env, encoding="utf-8", dimensions=(rows, cols), timeout=20,
                              cwd=str(self.home(user)))
        return child

    def sent(self):
        """[(argv list, message bytes)] for every sendmail call, in order."""
        out, sent = [], self.dir / "sent"
        n = 0
        while (sent / f"{n}.msg").exists():
            argv = (sent / f"{n}.argv").read_text().splitlines()
            out.append((argv, (sent / f"{n}.msg").read_bytes()))
            n += 1
        return out

    def make_sendmail_fail(self):
        (self.dir / "sendmail-fails").touch()


def message(subject, body="Hello.\n", sender="Bob Smith <bob@localhost>", to="alice@localhost",
            extra=""):
    return (f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
            f"Date: Tue, 24 Nov 2026 07:00:00 +0000\nMessage-ID: <{abs(hash(subject))}@localhost>\n"
            f"{extra}\n{body}").encode()


def quit_cleanly(child):
    import pexpect
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus
