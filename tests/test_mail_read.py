"""Reading mail on a terminal: summary, print, delete, save, quit and exit, checked in the files."""

import mailbox
import os
import subprocess
import sys

import pexpect
import pytest
from conftest import mbox_messages
from mail_harness import message, quit_cleanly

PROMPT = r"\? "
HOLD_FCNTL = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def three(sb):
    for n in (1, 2, 3):
        sb.deliver(message(f"Message number {n}", body=f"Body of message {n}.\nFrom the start\n"))


def statuses(path):
    return [(m["Subject"], m.get("Status", ""), m.get_flags()) for m in mbox_messages(path)]


def test_summary_and_print(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    child = sb.spawn()
    child.expect("3 messages 3 new")
    child.expect(r">N\s+1 Bob Smith .* Message number 1")
    child.expect(PROMPT)
    child.sendline("")                                  # Enter: the current message
    child.expect("Message 1:")
    child.expect("Subject: Message number 1")
    child.expect("Body of message 1.\r\n>From the start")  # as stored, as IMAP and POP3 show it
    child.expect(PROMPT)
    child.sendline("")                                  # Enter again: the next one
    child.expect("Body of message 2.")
    child.expect(PROMPT)
    child.sendline("=")
    child.expect("2\r\n")
    child.expect(PROMPT)
    child.sendline("h")
    child.expect(r" R\s+1 Bob Smith")                  # R: read in this session
    child.expect(r">R\s+2 Bob Smith")
    child.expect(r" N\s+3 Bob Smith")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    # Read messages moved to ~/mbox with Status: RO; the unread one stays in the spool, seen (O).
    assert statuses(sb.spool()) == [("Message number 3", "O", "O")]
    assert [(s, f) for s, _, f in statuses(sb.home() / "mbox")] == [
        ("Message number 1", "RO"), ("Message number 2", "RO")]
    body = mailbox.mbox(str(sb.home() / "mbox"))[0].get_payload()
    assert body == "Body of message 1.\n>From the start\n"       # quoted once, as in the spool


def test_delete_save_and_hold(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    sb.mailrc("set hold\n")
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("d 1")
    child.expect(PROMPT)
    child.sendline("s 2 +saved")
    child.expect(r'saved" \[New file\]')
    child.expect(PROMPT)
    child.sendline("p 3")
    child.expect("Body of message 3")
    child.expect(PROMPT)
    child.sendline("u 1")
    child.expect(PROMPT)
    child.sendline("d 1")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    # hold: the read message stays in the spool, marked read; the saved one left it; the deleted one is gone.
    assert statuses(sb.spool()) == [("Message number 3", "RO", "RO")]
    assert not (sb.home() / "mbox").exists()
    assert [s for s, _, _ in statuses(sb.home() / "mail" / "saved")] == ["Message number 2"]


def test_exit_leaves_everything(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    before = sb.spool().read_bytes()
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("d *")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)
    assert sb.spool().read_bytes() == before


def test_msglist_commands(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    sb.deliver(message("Invoice 42", sender="Carol <carol@elsewhere>"))
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("f /invoice")
    child.expect(r"4 Carol .* Invoice 42")
    child.expect(PROMPT)
    child.sendline("f carol")
    child.expect(r"4 Carol")
    child.expect(PROMPT)
    child.sendline("d 1-2 :n")                # everything new is deleted too
    child.expect(PROMPT)
    child.sendline("f *")
    child.expect("No applicable messages|no messages match")
    child.expect(PROMPT)
    child.sendline("u *")
    child.expect(PROMPT)
    child.sendline("top 4")
    child.expect("Subject: Invoice 42")
    child.expect(PROMPT)
    child.sendline("mb 1")
    child.expect(PROMPT)
    child.sendline("pre 4")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert [s for s, _, _ in statuses(sb.home() / "mbox")] == ["Message number 1"]
    # `top` does not count as reading; `pre` keeps message 4 in the spool either way.
    assert [s for s, _, _ in statuses(sb.spool())] == ["Message number 2", "Message number 3", "Invoice 42"]


def test_delivery_while_open_is_kept(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("d 1")
    child.expect(PROMPT)
    child.sendline("p 2")
    child.expect("Body of message 2")
    child.expect(PROMPT)
    sb.deliver(message("Arrived meanwhile", body="late\n"))
    assert quit_cleanly(child) == 0
    assert statuses(sb.spool()) == [("Message number 3", "O", "O"), ("Arrived meanwhile", "", "")]
    assert [s for s, _, _ in statuses(sb.home() / "mbox")] == ["Message number 2"]


def test_empty_spool(mail_sandbox):
    sb = mail_sandbox
    done = sb.mail()
    assert done.returncode == 0
    assert b"No mail for alice" in done.stdout
    assert sb.mail("-e").returncode == 1
    sb.deliver(message("one"))
    assert sb.mail("-e").returncode == 0


def test_summary_only(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    before = sb.spool().read_bytes()
    done = sb.mail("-H")
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 3 and "Message number 3" in lines[2]
    assert sb.spool().read_bytes() == before          # -H changes nothing


def test_folder_option_reads_mbox(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p 1")
    child.expect(PROMPT)
    quit_cleanly(child)
    child = sb.spawn("-f")
    child.expect("1 message")
    child.expect(r"1 Bob Smith .* Message number 1")
    child.expect(PROMPT)
    child.sendline("d 1")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert mbox_messages(sb.home() / "mbox") == []


def test_quit_that_cannot_write_mbox_loses_nothing(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    (sb.home() / "mbox").mkdir()                      # ~/mbox cannot be appended to
    before = sb.spool().read_bytes()
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p 1")
    child.expect(PROMPT)
    child.sendline("q")
    child.expect("nothing changed")
    child.expect(PROMPT)                              # still in the session
    child.sendline("x")
    child.expect(pexpect.EOF)
    assert sb.spool().read_bytes() == before


@pytest.mark.parametrize("mailrc", ["", "set crt=20\n"])
def test_long_text_goes_through_the_pager_by_default(mail_sandbox, mailrc):
    """As s-nail: on a terminal, a message or help longer than the screen is paged unless `unset crt`."""
    sb = mail_sandbox
    sb.deliver(message("long one", body="".join(f"line {n}\n" for n in range(100))))
    sb.mailrc(mailrc)
    sb.env["PAGER"] = "sed 's/^/PAGED: /'"
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p")
    child.expect("PAGED: line 99")
    child.expect(PROMPT)
    child.sendline("?")
    child.expect("PAGED: help ")
    child.expect(PROMPT)
    child.sendline("unset crt")
    child.expect(PROMPT)
    child.sendline("p")
    child.expect("\nline 99")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)


def test_an_all_read_folder_starts_at_its_first_message(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    sb.mail(input=b"p *\nq\n")                                   # every message read, moved to ~/mbox
    child = sb.spawn("-f")
    child.expect(r">\s+1 Bob Smith")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)


def test_list_wraps_between_names(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("one"))
    sb.env["COLUMNS"] = "40"
    out = sb.mail("-N", input=b"list\nx\n").stdout.decode()
    lines = out.strip().splitlines()[1:]                          # after the folder's status line
    assert len(lines) > 5 and all(len(line) <= 39 for line in lines)
    from mailsuite.mail.commands.table import TABLE
    assert " ".join(lines).split() == [c.name for c in TABLE]


def test_attachments_listed_and_detached(mail_sandbox, tmp_path):
    sb = mail_sandbox
    blob = bytes(range(256)) * 10
    (tmp_path / "blob.bin").write_bytes(blob)
    sb.mail("-s", "with file", "-a", str(tmp_path / "blob.bin"), "alice@localhost", input="Voilà.\n".encode())
    [(_, raw)] = sb.sent()
    sb.deliver(raw, sender="alice@localhost")
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p")
    child.expect("Voilà.")
    child.expect(r"\[-- Attachment #1: application/octet-stream, 2560 bytes, blob.bin --\]")
    child.expect(PROMPT)
    child.sendline("attachments")
    child.expect("#1 application/octet-stream, 2560 bytes, blob.bin")
    child.expect(PROMPT)
    child.sendline(f"detach 1 1 {tmp_path / 'out.bin'}")
    child.expect("2560 bytes")
    child.expect(PROMPT)
    child.sendline("x")
    child.expect(pexpect.EOF)
    assert (tmp_path / "out.bin").read_bytes() == blob


def test_other_sandbox_user(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("for bob", to="bob@localhost"), user="bob")
    done = sb.mail("-H", user="bob")
    assert b"for bob" in done.stdout
    assert b"for bob" not in sb.mail("-H").stdout


def test_unknown_sandbox_user_is_named(mail_sandbox):
    done = mail_sandbox.mail("-H", user="nosuch")
    assert done.returncode == 67                                 # EX_NOUSER
    assert done.stderr == b"mail: no such user in the sandbox: nosuch\n"


def test_bad_folders_are_clear_errors(mail_sandbox, tmp_path):
    sb = mail_sandbox
    (tmp_path / "garbage").write_bytes(b"not\x00an mbox\n")
    (tmp_path / "link").symlink_to(tmp_path / "garbage")
    for path, words in ((tmp_path / "missing", b"No such file"), (tmp_path / "garbage", b"not an mbox"),
                        (tmp_path / "link", b"symbolic link"), (tmp_path, b"directory")):
        done = sb.mail("-f", str(path))
        assert done.returncode == 66, (path, done)
        assert words in done.stderr and done.stderr.count(b"\n") == 1


def test_locked_spool_is_a_clear_temporary_failure(mail_sandbox):
    """Another program rewrites the spool (fcntl lock) or holds its dotlock: start-up or quit say so, nothing changes."""
    sb = mail_sandbox
    three(sb)
    sb.set_option("mailsuite", "lock_timeout", "1s")
    before = sb.spool().read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FCNTL, str(sb.spool())], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        done = sb.mail("-H")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert done.returncode == os.EX_TEMPFAIL
    assert done.stderr.count(b"\n") == 1
    lock = sb.dir / "spool" / "alice.lock"
    lock.write_text(f"{os.getpid()}\n")                 # a live process's dotlock: reading needs none
    assert sb.mail("-H").returncode == 0
    lock.unlink()
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("d 1")
    child.expect(PROMPT)
    lock.write_text(f"{os.getpid()}\n")
    child.sendline("q")
    child.expect("nothing changed")
    child.expect(PROMPT)
    lock.unlink()
    assert sb.spool().read_bytes() == before
    assert quit_cleanly(child) == 0                     # the lock is free again: now it works
    assert statuses(sb.spool())[0][0] == "Message number 2"


@pytest.mark.parametrize("uids_before", [True, False])
def test_another_client_expunges_while_open(mail_sandbox, uids_before):
    """An IMAP-style expunge moves every later message; mail finds them again, and quits correctly."""
    from mailsuite.core import config
    from mailsuite.store.mailbox import Mailbox
    sb = mail_sandbox
    three(sb)
    store = Mailbox(str(sb.spool()), config.load(sb.conf))
    if uids_before:
        with store.locked():
            store.sync()
    child = sb.spawn()
    child.expect(PROMPT)
    with store.locked():                                 # the other client: assign UIDs, drop message 1
        first = store.sync().messages[0]
        store.sync(expunge=[first.uid])
    child.sendline("p 2")
    child.expect("Subject: Message number 2")
    child.expect("Body of message 2.")
    child.expect(PROMPT)
    child.sendline("p 1")
    child.expect("removed by another program")
    child.expect(PROMPT)
    child.sendline("d 3")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    store.close()
    assert statuses(sb.spool()) == []
    assert [s for s, _, _ in statuses(sb.home() / "mbox")] == ["Message number 2"]


def test_nuls_and_oversized_lines_survive_reading_and_moving(mail_sandbox):
    sb = mail_sandbox
    body = b"nul:\x00:here\n" + b"x" * 200_000 + b"\nFrom inside the body\n>From quoted already\nend\n"
    original = message("odd bytes", body="") + body
    sb.deliver(original)
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p")
    child.expect("nul:\\?:here")                        # the NUL is shown, defused
    child.expect("end")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert len(mailbox.mbox(str(sb.home() / "mbox"))) == 1
    # Stored bytes as in the spool: mboxrd quoting applied exactly once, nothing else touched.
    quoted = body.replace(b"\nFrom inside", b"\n>From inside").replace(b"\n>From quoted", b"\n>>From quoted")
    assert b"\n\n" + quoted in (sb.home() / "mbox").read_bytes()


def test_half_written_last_message_is_read_and_kept(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    with open(sb.spool(), "ab") as f:                   # a writer that died without cleaning up
        f.write(b"From crash@localhost Tue Nov 24 07:00:00 2026\nSubject: half\n\npartial line without end")
    done = sb.mail("-H")
    assert done.returncode == 0, done.stderr
    assert b"half" in done.stdout.splitlines()[-1]
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("p 4")
    child.expect("partial line without end")
    child.expect(PROMPT)
    child.sendline("d 1")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    subjects = [m["Subject"] for m in mailbox.mbox(str(sb.spool()))]
    assert subjects == ["Message number 2", "Message number 3"]
    assert [m["Subject"] for m in mailbox.mbox(str(sb.home() / "mbox"))] == ["half"]


def test_new_mail_is_announced_and_taken_in_with_inc(mail_sandbox):
    sb = mail_sandbox
    three(sb)
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("inc")
    child.expect("No new mail.")
    child.expect(PROMPT)
    sb.deliver(message("Arrived later"))
    child.sendline("=")
    child.expect("New mail has arrived")
    child.expect(PROMPT)
    child.sendline("inc")
    child.expect(r"N\s+4 Bob Smith .* Arrived later")
    child.expect(PROMPT)
    child.sendline("p 4")
    child.expect("Subject: Arrived later")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert [s for s, _, _ in statuses(sb.home() / "mbox")] == ["Arrived later"]
    assert [f for _, f, _ in statuses(sb.spool())] == ["O", "O", "O"]
