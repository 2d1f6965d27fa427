"""More of the prompt on a terminal: write, copy, pipes, paging, folders, editors, ~h and ~m."""

import email
import email.policy
import mailbox

import pexpect
from conftest import mbox_messages
from mail_harness import message, quit_cleanly

PROMPT = r"\? "


def spawn_ready(sb, *args):
    child = sb.spawn(*args)
    child.expect(PROMPT)
    return child


def test_write_copy_and_save_by_sender(mail_sandbox, tmp_path):
    sb = mail_sandbox
    sb.deliver(message("first", body="Body one.\n"))
    sb.deliver(message("second", body="Body two.\n", sender="Carol <carol@example.org>"))
    child = spawn_ready(sb)
    child.sendline(f"w 1 {tmp_path / 'body.txt'}")
    child.expect("bytes")
    child.expect(PROMPT)
    child.sendline(f"c 2 {tmp_path / 'copy.mbox'}")
    child.expect(r"\[New file\]")
    child.expect(PROMPT)
    child.sendline("S 2")
    child.expect("carol")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert (tmp_path / "body.txt").read_text() == "Body one.\n"
    assert [m["Subject"] for m in mailbox.mbox(str(tmp_path / "copy.mbox"))] == ["second"]
    assert [m["Subject"] for m in mailbox.mbox(str(sb.home() / "carol"))] == ["second"]
    # written and Saved messages leave the spool; nothing else was there.
    assert mbox_messages(sb.spool()) == []


def test_pipe_and_shell(mail_sandbox, tmp_path):
    sb = mail_sandbox
    sb.deliver(message("piped", body="secret words\n"))
    child = spawn_ready(sb)
    child.sendline(f"| 1 'grep -c secret > {tmp_path / 'count'}'")
    child.expect(PROMPT)
    child.sendline(f"| wc -l > {tmp_path / 'lines'}")           # no list: the current message
    child.expect(PROMPT)
    child.sendline(f"!echo shell-ran > {tmp_path / 'shell'}")
    child.expect("!")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)
    assert (tmp_path / "count").read_text() == "1\n"
    assert int((tmp_path / "lines").read_text()) > 5
    assert (tmp_path / "shell").read_text() == "shell-ran\n"


def test_paging_the_summary(mail_sandbox):
    sb = mail_sandbox
    for n in range(1, 31):
        sb.deliver(message(f"subject {n:02d}"))
    sb.mailrc("set screen=10\n")
    child = spawn_ready(sb)
    child.sendline("h")
    child.expect("subject 01")
    child.expect("subject 10")
    child.expect(PROMPT)
    assert "subject 11" not in child.before
    child.sendline("z")
    child.expect("subject 11")
    child.expect("subject 20")
    child.expect(PROMPT)
    child.sendline("z")
    child.expect("subject 30")
    child.expect(PROMPT)
    child.sendline("z")
    child.expect("On last screenful")
    child.sendline("z-")
    child.expect("subject 11")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)


def test_switch_folder(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("in spool"))
    (sb.home() / "mail").mkdir(exist_ok=True)
    box = mailbox.mbox(str(sb.home() / "mail" / "archive"))
    box.add(mailbox.mboxMessage(message("archived")))
    box.flush()
    child = spawn_ready(sb)
    child.sendline("folder +archive")
    child.expect("archive\": 1 message")
    child.expect(PROMPT)
    child.sendline("p 1")
    child.expect("Subject: archived")
    child.expect(PROMPT)
    child.sendline("folder %")
    child.expect("1 message 1 unread")                # seen in the summary before: no longer new
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)


def test_editor_and_edit_headers(mail_sandbox, tmp_path):
    sb = mail_sandbox
    editor = tmp_path / "editor"
    editor.write_text("#!/bin/sh\nsed -i 's/typo/fixed/' \"$1\"\necho 'added by editor' >> \"$1\"\n")
    editor.chmod(0o755)
    sb.env["EDITOR"] = str(editor)
    child = sb.spawn("-s", "edited", "bob@localhost")
    child.sendline("a typo here")
    child.sendline("~e")
    child.expect(r"\(continue\)")
    child.sendline("~h")
    child.expect("To: ")
    child.sendline(", carol@example.org")            # appended after the prefilled "bob@localhost"
    child.expect("Subject: ")
    child.sendline(" again")
    child.expect("Cc: ")
    child.sendline("")
    child.expect("Bcc: ")
    child.sendline("")
    child.sendline(".")
    child.expect(pexpect.EOF)
    [(argv, raw)] = sb.sent()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content() == "a fixed here\nadded by editor\n"
    assert msg["Subject"] == "edited again"
    assert argv[4:] == ["bob@localhost", "carol@example.org"]


def test_mail_command_inserts_message_with_tilde_m(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("original", body="quote me\n"))
    child = spawn_ready(sb)
    child.sendline("m carol@example.org")
    child.expect("Subject: ")
    child.sendline("Fwd: original")
    child.sendline("See below.")
    child.sendline("~m 1")
    child.expect(r"\(continue\)")
    child.sendline(".")
    child.expect("EOT")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)
    [(argv, raw)] = sb.sent()
    body = email.message_from_bytes(raw, policy=email.policy.default).get_content()
    assert body.startswith("See below.\nOn ") and "> quote me" in body


def test_failed_send_from_the_prompt_keeps_session_and_letter(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("hello"))
    sb.make_sendmail_fail()
    child = spawn_ready(sb)
    child.sendline("R")
    child.sendline("my answer")
    child.sendline(".")
    child.expect("dead.letter")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)
    [dead] = mailbox.mbox(str(sb.home() / "dead.letter"))
    assert dead["Subject"] == "Re: hello" and "my answer" in dead.get_payload(decode=True).decode()


def test_hangup_leaves_mailbox_as_it_was(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("one"))
    before = sb.spool().read_bytes()
    child = spawn_ready(sb)
    child.sendline("d 1")
    child.expect(PROMPT)
    child.kill(1)                                     # SIGHUP
    child.expect(pexpect.EOF)
    assert sb.spool().read_bytes() == before


def test_dp_walks_forward_and_stops_at_the_end(mail_sandbox):
    sb = mail_sandbox
    for subject in ("first", "second"):
        sb.deliver(message(subject))
    done = sb.mail("-N", input=b"dp 1\ndp\nx\n")        # commands from a pipe work as at a terminal
    out = done.stdout.decode()
    assert "Subject: first" not in out
    assert out.index("Subject: second") < out.index("At EOF")


def test_source_and_set_at_the_prompt(mail_sandbox, tmp_path):
    sb = mail_sandbox
    sb.deliver(message("with headers", extra="X-Noise: loud\n"))
    (tmp_path / "rc").write_text("ignore X-Noise Received\nalias pals bob carol\n")
    done = sb.mail("-N", input=f"source {tmp_path / 'rc'}\np\nalias\nunset quote\nset\nx\n".encode())
    out = done.stdout.decode()
    assert "X-Noise" not in out and "Subject: with headers" in out
    assert "pals\tbob carol" in out
    assert "\nquote\n" not in out and "\nhold\n" not in out and "\nasksub\n" in out
