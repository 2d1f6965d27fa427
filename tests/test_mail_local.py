"""mail.local as its callers see it: arguments, exit statuses, LMTP."""

import mailbox
import os
import smtplib
import subprocess

import pytest
from conftest import program

MESSAGE = b"From: bob@example.org\nTo: alice@localhost\nSubject: hello\n\nbody line\n"


def messages(path):
    box = mailbox.mbox(str(path), create=False)
    try:
        return [box.get_message(k) for k in box.keys()]
    finally:
        box.close()


def test_delivers_to_every_user(sandbox):
    done = sandbox.run("mail.local", "-f", "bob@example.org", "alice", "bob", input=MESSAGE)
    assert done.returncode == 0, done.stderr
    for user in ("alice", "bob"):
        [msg] = messages(sandbox.spool(user))
        assert msg["subject"] == "hello"
        assert msg["return-path"] == "<bob@example.org>"
        assert msg.get_from().startswith("bob@example.org ")
        assert msg.get_payload() == "body line\n"


def test_crlf_input_without_final_newline(sandbox):
    done = sandbox.run("mail.local", "alice", input=b"Subject: crlf\r\n\r\nline one\r\nline two")
    assert done.returncode == 0
    [msg] = messages(sandbox.spool("alice"))
    assert msg.get_payload() == "line one\nline two\n"
    assert b"\r" not in sandbox.spool("alice").read_bytes()


def test_sender_cannot_forge_store_headers(sandbox):
    forged = b"Subject: x\nStatus: RO\nX-Status: D\nX-UID: 7\nX-IMAPbase: 1 0000000099\nContent-Length: 1\n\nbody\n"
    assert sandbox.run("mail.local", "alice", input=forged).returncode == 0
    [msg] = messages(sandbox.spool("alice"))
    for name in ("status", "x-status", "x-uid", "x-imapbase", "content-length"):
        assert msg[name] is None


def test_unknown_user_is_ex_nouser_and_the_others_still_get_it(sandbox):
    done = sandbox.run("mail.local", "alice", "nosuchuser", input=MESSAGE)
    assert done.returncode == os.EX_NOUSER
    assert b"nosuchuser: unknown user" in done.stderr
    assert len(messages(sandbox.spool("alice"))) == 1


@pytest.mark.parametrize("args, status", [([], os.EX_USAGE), (["-x", "alice"], os.EX_USAGE),
                                          (["-f", "a\nb", "alice"], os.EX_USAGE)])
def test_usage_errors(sandbox, args, status):
    done = sandbox.run("mail.local", *args, input=MESSAGE)
    assert done.returncode == status
    assert done.stderr.startswith(b"mail.local: ")


def test_empty_input_is_a_data_error(sandbox):
    done = sandbox.run("mail.local", "alice", input=b"")
    assert done.returncode == os.EX_DATAERR
    assert sandbox.spool("alice").read_bytes() == b""


def test_oversized_message_is_refused(sandbox):
    conf = sandbox.dir / "mailsuite.conf"
    conf.write_text(conf.read_text() + "\n[delivery]\nmax_message_size = 1k\n")
    done = sandbox.run("mail.local", "alice", input=b"Subject: big\n\n" + b"x" * 4000 + b"\n")
    assert done.returncode == os.EX_DATAERR
    assert sandbox.spool("alice").read_bytes() == b""


def test_help(sandbox):
    done = subprocess.run([program("mail.local"), "--help"], capture_output=True)
    assert done.returncode == 0 and b"usage: mail.local" in done.stdout


def lmtp_transcript(sandbox, lines):
    done = sandbox.run("mail.local", "-l", input=b"".join(l + b"\r\n" for l in lines))
    assert done.returncode == 0
    return [l for l in done.stdout.split(b"\r\n") if l]


def test_lmtp_transcript(sandbox):
    replies = lmtp_transcript(sandbox, [
        b"MAIL FROM:<a@b>", b"LHLO client.example", b"MAIL FROM:<bob@example.org>",
        b"RCPT TO:<alice@localhost>", b"RCPT TO:<nobody@localhost>", b"RCPT TO:<bob+tag@localhost>",
        b"DATA", b"Subject: lmtp", b"", b"..leading dot", b".", b"QUIT"])
    assert replies[0].startswith(b"220 ")
    assert replies[1].startswith(b"503 ")                      # MAIL before LHLO
    assert replies[2].startswith(b"250-") and replies[-1] == b"221 2.0.0 bye"
    codes = [r[:3] for r in replies if not r.startswith(b"250-")]
    assert codes == [b"220", b"503", b"250", b"250", b"250", b"550", b"250", b"354", b"250", b"250", b"221"]
    for user in ("alice", "bob"):
        [msg] = messages(sandbox.spool(user))
        assert msg.get_payload() == ".leading dot\n"


def test_lmtp_hostile_input(sandbox):
    replies = lmtp_transcript(sandbox, [b"X" * 5000, b"BOGUS", b"LHLO x", b"RCPT TO:<alice>", b"MAIL FROM:bad",
                                        b"MAIL FROM:<a@b>", b"DATA", b"RCPT TO:<alice>", b"DATA",
                                        b"Subject: \x00nul", b"", b"\xff", b".", b"QUIT"])
    codes = [r[:3] for r in replies if not r.startswith(b"250-")]
    assert codes == [b"220", b"500", b"500", b"250", b"503", b"501", b"250", b"503", b"250", b"354", b"250", b"221"]
    assert b"\x00nul" in sandbox.spool("alice").read_bytes()


def test_lmtp_with_pythons_client(sandbox, lmtp_socket):
    """smtplib.LMTP over a unix socket whose connection is served by mail.local -l."""
    client = smtplib.LMTP(lmtp_socket)
    refused = client.sendmail("bob@example.org", ["alice@localhost", "ghost@localhost", "bob@localhost"],
                              b"Subject: via smtplib\r\n\r\nhello\r\n.dot\r\n")
    client.quit()
    assert refused == {"ghost@localhost": (550, b"5.1.1 no such user")}
    for user in ("alice", "bob"):
        [msg] = messages(sandbox.spool(user))
        assert msg["subject"] == "via smtplib" and msg.get_payload() == "hello\n.dot\n"


@pytest.mark.parametrize("stall", [b"RCPT TO:<ali", b"DATA\r\nSubject: half\r\n\r\nstill coming"])
def test_an_lmtp_client_that_stalls_gets_421_and_nothing_is_delivered(sandbox, stall):
    """Every line, command or data, must come within [delivery] lmtp_timeout; a half message is never kept."""
    from mta_helpers import set_config
    set_config(sandbox, "delivery", "lmtp_timeout", "1s")
    before = sandbox.spool("alice").read_bytes()
    proc = subprocess.Popen([program("mail.local"), "-C", sandbox.conf, "-l"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        proc.stdin.write(b"LHLO x\r\nMAIL FROM:<a@b>\r\n" + (b"RCPT TO:<alice@localhost>\r\n" if b"DATA" in stall
                                                               else b"") + stall)
        proc.stdin.flush()                                      # ...and nothing more, the pipe left open
        proc.wait(timeout=60)
        out = proc.stdout.read()
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert out.rstrip(b"\r\n").splitlines()[-1] == b"421 4.4.2 timeout, closing the session"
    assert sandbox.spool("alice").read_bytes() == before
