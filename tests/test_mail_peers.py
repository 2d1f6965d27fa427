"""After `mail`, other readers agree: Python's mailbox, s-nail and mutt; and `mail` reads what s-nail wrote."""

import mailbox
import os
import subprocess

import pexpect
import pytest
from conftest import need
from mail_harness import message, quit_cleanly
from tmux import mutt

PROMPT = r"\? "


def snail_summary(path, home):
    """(status letter, subject) per message as `s-nail -H` shows them; N new, U unread, O read."""
    need("s-nail")
    done = subprocess.run(["s-nail", "-:/", "-H", "-f", str(path)], capture_output=True, timeout=30,
                          env=dict(os.environ, HOME=str(home), LC_ALL="C.UTF-8"))
    rows = []
    for line in done.stdout.decode().splitlines():
        fields = line.lstrip("▸> ").split()
        letter = line.replace("▸", " ")[1]
        rows.append((letter.strip(), fields[-1] if fields else ""))
    return rows


def _index_rows(screen):
    return [line for line in screen.splitlines() if line[:4].strip().isdigit()]


def mutt_index(path, home, count):
    """(flag, subject) per message from mutt's index: N new, O old, blank for read."""
    session = mutt(path, home)
    try:
        screen = session.wait_for(lambda text: len(_index_rows(text)) >= count)
    finally:
        session.close()
    return [(line[5:6].strip(), line.split()[-1]) for line in _index_rows(screen)]


def test_spool_and_mbox_agree_with_peers(mail_sandbox):
    sb = mail_sandbox
    for subject in ("alpha", "beta", "gamma", "delta"):
        sb.deliver(message(subject))
    child = sb.spawn()
    child.expect(PROMPT)
    for command in ("p 1", "p 2", "d 3"):
        child.sendline(command)
        child.expect(PROMPT)
    sb.deliver(message("epsilon"))                      # arrives while mail is open
    assert quit_cleanly(child) == 0

    spool = [(m["Subject"], m.get_flags()) for m in mailbox.mbox(str(sb.spool()))]
    assert spool == [("delta", "O"), ("epsilon", "")]
    mbox = [(m["Subject"], m.get_flags()) for m in mailbox.mbox(str(sb.home() / "mbox"))]
    assert mbox == [("alpha", "RO"), ("beta", "RO")]

    assert snail_summary(sb.spool(), sb.home()) == [("U", "delta"), ("N", "epsilon")]
    assert snail_summary(sb.home() / "mbox", sb.home()) == [("O", "alpha"), ("O", "beta")]
    assert mutt_index(sb.spool(), sb.home(), 2) == [("O", "delta"), ("N", "epsilon")]
    assert mutt_index(sb.home() / "mbox", sb.home(), 2) == [("", "alpha"), ("", "beta")]


def test_reads_what_snail_wrote(mail_sandbox):
    """s-nail appends to a file recipient, then reads and rewrites the spool; `mail` follows."""
    need("s-nail")
    sb = mail_sandbox
    env = dict(os.environ, HOME=str(sb.home()), LC_ALL="C.UTF-8")
    spool = str(sb.spool())
    for subject, body in (("Grüße aus Köln", "Schöne Grüße\nFrom the Rhine\n"), ("plain", "text\n"),
                          ("third", "3\n")):
        done = subprocess.run(["s-nail", "-:/", "-Sexpandaddr", "-Sttycharset=utf-8", "-s", subject, spool],
                              input=body.encode(), env=env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
    # s-nail reads message 1, deletes 2 and quits: it rewrites the file with its own Status: headers.
    done = subprocess.run(["s-nail", "-:/", "-N", "-f", spool], input=b"p 1\nd 2\nq\n", env=env,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr

    summary = sb.mail("-H").stdout.decode()
    lines = summary.splitlines()
    assert len(lines) == 2
    assert "Grüße aus Köln" in lines[0] and lines[0][1] == " "        # read
    assert "third" in lines[1] and lines[1][1] == "U"                 # seen, unread

    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p 1")
    child.expect("Subject: Grüße aus Köln")
    child.expect("Schöne Grüße\r\nFrom the Rhine")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)


@pytest.mark.parametrize("hold", [False, True])
def test_snail_sees_our_flags_after_hold(mail_sandbox, hold):
    sb = mail_sandbox
    sb.deliver(message("one"))
    sb.deliver(message("two"))
    if hold:
        sb.mailrc("set hold\n")
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p 1")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    expected = [("O", "one"), ("U", "two")] if hold else [("U", "two")]
    assert snail_summary(sb.spool(), sb.home()) == expected


def test_attachment_saved_by_mutt_is_identical(mail_sandbox, tmp_path):
    sb = mail_sandbox
    blob = os.urandom(5000)
    (tmp_path / "blob.bin").write_bytes(blob)
    assert sb.mail("-s", "attached", "-a", str(tmp_path / "blob.bin"), "alice@localhost",
                   input=b"see attached\n").returncode == 0
    [(_, raw)] = sb.sent()
    sb.deliver(raw, sender="alice@localhost")
    session = mutt(sb.spool(), sb.home())
    try:
        session.wait_for(lambda text: "attached" in text)
        session.keys("Enter")                           # open the message
        session.wait_for(lambda text: "see attached" in text)
        session.keys("v")                               # its attachments
        session.wait_for(lambda text: "blob.bin" in text)
        session.keys("j", "s")                          # the second part: save
        session.wait_for(lambda text: "Save to file" in text)
        session.keys("C-u", str(tmp_path / "out.bin"), "Enter")
        session.wait_for(lambda text: "Attachment saved" in text)
    finally:
        session.close()
    assert (tmp_path / "out.bin").read_bytes() == blob


def test_reads_what_mutt_wrote(mail_sandbox):
    """mutt reads message 1, deletes 2 and quits, rewriting the spool its way; `mail` follows."""
    sb = mail_sandbox
    for subject in ("one", "two", "three"):
        sb.deliver(message(subject, body=f"body {subject}\nFrom the start\n"))
    session = mutt(sb.spool(), sb.home(), readonly=False)
    try:
        session.wait_for(lambda text: "three" in text)
        session.keys("Enter")                           # read message 1
        session.wait_for(lambda text: "body one" in text)
        session.keys("i")                               # back to the index
        session.wait_for(lambda text: "Msgs:3" in text)
        session.keys("j", "d", "q")                     # delete message 2, quit
        session.wait_for(lambda text: "Purge" in text)
        session.keys("y")
        session.wait_for(lambda text: "Mutt" not in text)
    finally:
        session.close()
    lines = sb.mail("-H").stdout.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["one", "three"]
    assert lines[0][1] == " " and lines[1][1] == "U"    # read; seen but unread (mutt's O)
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p 2")
    child.expect("body three\r\n>From the start")     # as delivered and as mutt shows it
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert [m["Subject"] for m in mailbox.mbox(str(sb.home() / "mbox"))] == ["one", "three"]
