"""End to end through the real sendmail: alice writes with mail, bob reads and answers with mail."""

import email
import email.policy
import mailbox
import os
import time

import pexpect
from conftest import mbox_messages, program

PROMPT = r"\? "


def wait_for_messages(path, count, timeout=30):
    """The sandbox's sendmail delivers in the background: wait until PATH holds COUNT messages."""
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path) and len(mailbox.mbox(str(path))) >= count:
            return list(mailbox.mbox(str(path)))
        assert time.monotonic() < deadline, f"{path}: no delivery after {timeout}s"
        time.sleep(0.1)


def spawn(sandbox, user, *args):
    env = dict(sandbox.env, HOME=str(sandbox.home(user)), LC_ALL="C.UTF-8", TERM="dumb", PAGER="cat")
    return pexpect.spawn(program("mail"), ["-C", sandbox.conf, "-u", user, *args], env=env,
                         encoding="utf-8", dimensions=(24, 100), timeout=30, cwd=str(sandbox.home(user)))


def test_send_read_reply_through_sendmail(sandbox, tmp_path):
    program("sendmail")
    attachment = tmp_path / "report.pdf"
    attachment.write_bytes(b"%PDF-1.4\n" + os.urandom(4000))
    done = sandbox.run("mail", "-u", "alice", "-s", "Quartalsbericht – Grüße", "-a", str(attachment),
                       "bob@localhost", input="Hallo Bob,\nanbei der Bericht.\n".encode())
    assert done.returncode == 0, done.stderr
    [delivered] = wait_for_messages(sandbox.spool("bob"), 1)
    msg = email.message_from_bytes(delivered.as_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Quartalsbericht – Grüße"
    assert msg["From"] == "Alice Example <alice@localhost>"
    [part] = msg.iter_attachments()
    assert part.get_filename() == "report.pdf" and part.get_payload(decode=True) == attachment.read_bytes()

    child = spawn(sandbox, "bob")
    child.expect(r">N\s+1 Alice Example .* Quartalsbericht – Grüße")
    child.expect(PROMPT)
    child.sendline("p")
    child.expect("anbei der Bericht.")
    child.expect(r"Attachment #1: application/pdf, 4009 bytes, report.pdf")
    child.expect(PROMPT)
    child.sendline("R")
    child.sendline("Danke!")
    child.sendline(".")
    child.expect("EOT")
    child.expect(PROMPT)
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    [stored] = wait_for_messages(sandbox.spool("alice"), 1)
    answer = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    assert answer["Subject"] == "Re: Quartalsbericht – Grüße"
    assert answer["In-Reply-To"] == msg["Message-ID"]
    assert "> anbei der Bericht." in answer.get_content()
    # bob's read message went to his ~/mbox, his spool is empty.
    assert mbox_messages(sandbox.spool("bob")) == []
    assert [m["Message-ID"] for m in mailbox.mbox(str(sandbox.home("bob") / "mbox"))] == [msg["Message-ID"]]


def test_refused_recipient_keeps_the_letter(sandbox):
    program("sendmail")
    done = sandbox.run("mail", "-u", "alice", "-s", "to nowhere", "--", "-oQ/tmp/x",
                       input=b"keep this\n", env=dict(sandbox.env, HOME=str(sandbox.home("alice"))))
    assert done.returncode == os.EX_UNAVAILABLE
    assert b"sendmail failed" in done.stderr
    [dead] = mailbox.mbox(str(sandbox.home("alice") / "dead.letter"))
    assert dead["Subject"] == "to nowhere"
