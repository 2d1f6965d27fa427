"""Sending: what `mail` hands to sendmail, from a pipe and from the terminal's composer."""

import email
import email.policy
import mailbox
import os

import pexpect
from mail_harness import message, quit_cleanly


def parsed(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_pipe_with_headers_and_bcc(mail_sandbox):
    sb = mail_sandbox
    done = sb.mail("-s", "Grüße aus Köln", "-c", "carol@example.org", "-b", "dave@example.org",
                   "bob@localhost", input="Schöne Grüße.\n".encode())
    assert done.returncode == 0, done.stderr
    [(argv, raw)] = sb.sent()
    assert argv == ["-oi", "-f", "alice@localhost", "--", "bob@localhost", "carol@example.org", "dave@example.org"]
    assert b"Gr\xc3\xbc" not in raw.split(b"\n\n", 1)[0]            # headers are pure ASCII (RFC 2047)
    msg = parsed(raw)
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["To"] == "bob@localhost" and msg["Cc"] == "carol@example.org"
    assert "Bcc" not in msg
    assert msg["From"] == "Alice Example <alice@localhost>"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"   # mostly ASCII reads better as QP
    assert msg.get_content() == "Schöne Grüße.\n"
    assert b"\r" not in raw


def test_argument_looking_like_an_option_stays_an_address(mail_sandbox):
    sb = mail_sandbox
    done = sb.mail("-s", "x", "--", "-oQ/tmp/evil@example.org", input=b"hi\n")
    assert done.returncode == 0, done.stderr
    [(argv, _)] = sb.sent()
    assert argv[-2:] == ["--", "-oQ/tmp/evil@example.org"]


def test_attachments_decode_byte_identical(mail_sandbox, tmp_path):
    sb = mail_sandbox
    blob = bytes(range(256)) * 40
    (tmp_path / "data.bin").write_bytes(blob)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(3000))
    (tmp_path / "notes.txt").write_bytes("naïve\r\nline two\n".encode())
    done = sb.mail("-s", "files", "-a", str(tmp_path / "data.bin"), "-a", str(tmp_path / "photo.png"),
                   "-a", str(tmp_path / "notes.txt"), "bob@localhost", input=b"See attached.\n")
    assert done.returncode == 0, done.stderr
    [(_, raw)] = sb.sent()
    msg = parsed(raw)
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_attachments())
    assert [p.get_content_type() for p in parts] == ["application/octet-stream", "image/png", "text/plain"]
    for part, name in zip(parts, ("data.bin", "photo.png", "notes.txt")):
        assert part.get_filename() == name
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_payload(decode=True) == (tmp_path / name).read_bytes()
    assert msg.get_body(("plain",)).get_content() == "See attached.\n"


def test_missing_attachment_is_an_error(mail_sandbox):
    sb = mail_sandbox
    done = sb.mail("-a", "/nonexistent/file", "bob@localhost", input=b"x\n")
    assert done.returncode == os.EX_NOINPUT
    assert b"/nonexistent/file" in done.stderr
    assert sb.sent() == []


def test_empty_body_with_E_is_not_sent(mail_sandbox):
    sb = mail_sandbox
    assert sb.mail("-E", "-s", "nothing", "bob@localhost", input=b"").returncode == 0
    assert sb.sent() == []


def test_sendmail_failure_saves_dead_letter(mail_sandbox):
    sb = mail_sandbox
    sb.make_sendmail_fail()
    done = sb.mail("-s", "lost?", "bob@localhost", input=b"keep me\n")
    assert done.returncode == os.EX_UNAVAILABLE
    assert b"queue file write error" in done.stderr
    assert b"dead.letter" in done.stderr
    [dead] = mailbox.mbox(str(sb.home() / "dead.letter"))
    assert dead["Subject"] == "lost?" and dead.get_payload() == "keep me\n"


def test_aliases_and_record(mail_sandbox):
    sb = mail_sandbox
    sb.mailrc("alias team bob@localhost carol@example.org\nset record=+sent\n")
    assert sb.mail("-s", "hi team", "team", input=b"hello\n").returncode == 0
    [(argv, _)] = sb.sent()
    assert argv[-2:] == ["bob@localhost", "carol@example.org"]
    [kept] = mailbox.mbox(str(sb.home() / "mail" / "sent"))
    assert kept["Subject"] == "hi team"


# --- the composer on a terminal ---

def compose(sb, *args):
    """`mail ARGS` composing on a terminal, once it is ready for input (as a person would wait)."""
    child = sb.spawn(*args)
    child.sendline("~p")
    child.expect(r"\(continue\)")
    return child


def test_tilde_escapes(mail_sandbox, tmp_path):
    sb = mail_sandbox
    (tmp_path / "insert.txt").write_text("inserted line\n")
    child = sb.spawn("bob@localhost")
    child.expect("Subject: ")
    child.sendline("first subject")
    child.sendline("Line one")
    child.sendline("~s Better subject")
    child.sendline("~c carol@example.org")
    child.sendline("~b dave@example.org")
    child.sendline("~t erin@example.org")
    child.sendline(f"~r {tmp_path / 'insert.txt'}")
    child.expect("insert.txt\" 1/14")
    child.sendline("~~tilde line")
    child.sendline("~| tr a-z A-Z")
    child.expect(r"\(continue\)")
    child.sendline("~p")
    child.expect("Subject: Better subject")
    child.expect("LINE ONE")
    child.sendline(f"~w {tmp_path / 'draft.txt'}")
    child.expect("draft.txt")
    child.sendline("~?")
    child.expect("abandon the message")
    child.sendline(".")
    child.expect("EOT")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    [(argv, raw)] = sb.sent()
    assert argv[4:] == ["bob@localhost", "erin@example.org", "carol@example.org", "dave@example.org"]
    msg = parsed(raw)
    assert msg["Subject"] == "Better subject"
    assert msg["To"] == "bob@localhost, erin@example.org"
    assert msg.get_content() == "LINE ONE\nINSERTED LINE\n~TILDE LINE\n"
    assert (tmp_path / "draft.txt").read_text() == "LINE ONE\nINSERTED LINE\n~TILDE LINE\n"


def test_ctrl_d_ends_and_askcc(mail_sandbox):
    sb = mail_sandbox
    sb.mailrc("set askcc\n")
    child = compose(sb, "-s", "via ctrl-d", "bob@localhost")
    child.sendline("body")
    child.sendline("~p")
    child.expect(r"body\r\n\(continue\)")
    child.sendeof()
    child.expect("Cc: ")
    child.sendline("carol@example.org")
    child.expect(pexpect.EOF)
    [(argv, raw)] = sb.sent()
    assert parsed(raw)["Cc"] == "carol@example.org"
    assert parsed(raw).get_content() == "body\n"


def test_tilde_q_and_double_interrupt_keep_dead_letter(mail_sandbox):
    sb = mail_sandbox
    child = compose(sb, "-s", "abandoned", "bob@localhost")
    child.sendline("draft text")
    child.sendline("~q")
    child.expect(pexpect.EOF)
    child = compose(sb, "-s", "interrupted", "bob@localhost")
    child.sendline("second draft")
    child.sendline("~p")
    child.expect(r"second draft\r\n\(continue\)")
    child.sendintr()
    child.expect("one more to kill letter")
    child.sendintr()
    child.expect(pexpect.EOF)
    child = compose(sb, "-s", "discarded", "bob@localhost")
    child.sendline("nothing")
    child.sendline("~x")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1                        # not sent, on purpose
    assert sb.sent() == []
    dead = [(m["Subject"], m.get_payload()) for m in mailbox.mbox(str(sb.home() / "dead.letter"))]
    assert dead == [("abandoned", "draft text\n"), ("interrupted", "second draft\n")]


def test_reply_and_reply_all(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("Lunch?", body="Friday at noon?\n", to="alice@localhost, Erin <erin@example.org>",
                       extra="Cc: Carol <carol@example.org>\n"))
    child = sb.spawn()
    child.expect(r"\? ")
    child.sendline("R")                                  # the sender only
    child.sendline("Sounds good.")
    child.sendline(".")
    child.expect("EOT")
    child.expect(r"\? ")
    child.sendline("r 1")                                # everyone but me
    child.sendline("All of you.")
    child.sendline(".")
    child.expect(r"\? ")
    assert quit_cleanly(child) == 0
    (argv1, raw1), (argv2, raw2) = sb.sent()
    assert argv1[4:] == ["bob@localhost"]
    first = parsed(raw1)
    assert first["Subject"] == "Re: Lunch?"
    assert first["In-Reply-To"] == f"<{abs(hash('Lunch?'))}@localhost>"
    body = first.get_content()
    assert "> Friday at noon?" in body and body.rstrip().endswith("Sounds good.")
    assert argv2[4:] == ["bob@localhost", "erin@example.org", "carol@example.org"]
    second = parsed(raw2)
    assert second["To"] == "Bob Smith <bob@localhost>, Erin <erin@example.org>"
    assert second["Cc"] == "Carol <carol@example.org>"


def test_reply_keeps_encoded_names_with_commas_whole(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("names", sender="=?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?= <jm@example.org>",
                       to="alice@localhost, =?utf-8?q?Doe=2C_Jane?= <jd@example.org>"))
    done = sb.mail(input=b"r\nok\n.\nq\n")
    assert done.returncode == 0, done.stderr
    [(argv, raw)] = sb.sent()
    assert argv[4:] == ["jm@example.org", "jd@example.org"]
    assert parsed(raw)["To"] == '"Müller, Jörg" <jm@example.org>, "Doe, Jane" <jd@example.org>'


def test_header_injection_is_refused(mail_sandbox):
    sb = mail_sandbox
    for args in (["-s", "x\nBcc: evil@example.org", "bob@localhost"],
                 ["-r", "a@b\nBcc: evil@example.org", "bob@localhost"],
                 ["bob@localhost\nBcc: evil@example.org"],
                 ["-c", "c@d\rBcc: evil@example.org", "bob@localhost"]):
        done = sb.mail(*args, input=b"hi\n")
        assert done.returncode == os.EX_USAGE, (args, done.stderr)
        assert done.stderr.count(b"\n") == 1 and b"not allowed" in done.stderr
    assert sb.sent() == []


def test_hangup_while_composing_keeps_the_letter(mail_sandbox):
    sb = mail_sandbox
    child = compose(sb, "-s", "cut off", "bob@localhost")
    child.sendline("half a thought")
    child.sendline("~p")
    child.expect(r"half a thought\r\n\(continue\)")
    child.kill(1)                                       # SIGHUP: the terminal went away
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert sb.sent() == []
    [dead] = mailbox.mbox(str(sb.home() / "dead.letter"))
    assert dead["Subject"] == "cut off" and dead.get_payload() == "half a thought\n"


def test_a_malformed_address_is_refused_before_anything_is_sent(mail_sandbox):
    sb = mail_sandbox
    done = sb.mail("-s", "x", "bob@@localhost", input=b"hi\n")
    assert done.returncode == os.EX_USAGE
    assert done.stderr.decode() == "mail: To: 'bob@@localhost' is not a mail address\n"
    assert sb.sent() == []


def test_verbose_lets_sendmail_report(mail_sandbox):
    sb = mail_sandbox
    assert sb.mail("-v", "-s", "x", "bob@localhost", input=b"hi\n").returncode == 0
    [(argv, _)] = sb.sent()
    assert argv[:2] == ["-oi", "-v"]


def test_tilde_at_without_a_name_asks_for_files(mail_sandbox, tmp_path):
    sb = mail_sandbox
    (tmp_path / "notes.txt").write_text("Notizen für München\n")
    child = sb.spawn("-s", "with attachment", "bob@localhost")
    child.sendline("see attached")
    child.sendline("~@")
    child.expect("Attach file")
    child.sendline(str(tmp_path / "notes.txt"))
    child.expect("Attached")
    child.expect("Attach file")
    child.sendline("")
    child.sendline(".")
    child.expect("EOT")
    child.expect(pexpect.EOF)
    [(_, raw)] = sb.sent()
    [part] = parsed(raw).iter_attachments()
    assert part.get_filename() == "notes.txt"
    assert part["Content-Type"] == 'text/plain; charset="utf-8"'
    assert part.get_content() == "Notizen für München\n"


def test_a_sent_reply_marks_the_original_answered(mail_sandbox):
    """X-Status: A, as mailx and mutt write it (IMAP \\Answered); not for a reply that was not sent."""
    sb = mail_sandbox
    sb.mailrc("set hold\n")
    for subject in ("Answered", "Abandoned", "Failed"):
        sb.deliver(message(subject))
    child = sb.spawn()
    child.expect(r"\? ")
    child.sendline("R 1")
    child.sendline("Yes.")
    child.sendline(".")
    child.expect("EOT")
    child.expect(r"\? ")
    child.sendline("R 2")
    child.sendline("~q")                                  # abandoned: kept in dead.letter, never sent
    child.expect(r"\? ")
    sb.make_sendmail_fail()
    child.sendline("R 3")
    child.sendline("No.")
    child.sendline(".")
    child.expect(r"\? ")
    child.sendline("h")
    child.expect(r"\? ")
    summary = child.before
    assert quit_cleanly(child) == 0
    assert " A   1 " in summary or ">A   1 " in summary, summary
    kept = {m["Subject"]: m for m in mailbox.mbox(sb.spool())}
    assert "A" in kept["Answered"].get("X-Status", "")
    assert "A" not in kept["Abandoned"].get("X-Status", "")
    assert "A" not in kept["Failed"].get("X-Status", "")
    assert "R" in kept["Abandoned"]["Status"]


def test_answered_travels_to_mbox(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("Question"))
    child = sb.spawn()
    child.expect(r"\? ")
    child.sendline("R")
    child.sendline("Answer.")
    child.sendline(".")
    child.expect("EOT")
    child.expect(r"\? ")
    assert quit_cleanly(child) == 0
    [moved] = mailbox.mbox(str(sb.home() / "mbox"))
    assert moved["Subject"] == "Question" and "A" in moved["X-Status"]
