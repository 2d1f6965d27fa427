"""mail's `detach` saves what a stranger sent without letting the stranger choose where (issue 10, item 13).

An attachment named `../../.bash_profile` became ~/.bash_profile (run at
the next login); an RFC 2047 name made a file whose name was a terminal
escape.  Saved names now lose their directories, control characters and
leading dots; an existing file is replaced only when the user says so at
the terminal, whole or not at all; a write that fails leaves no partial
file.
"""

import base64
import email.message
import os
import resource
import subprocess

import pytest
from conftest import program
from mail_harness import quit_cleanly

PROMPT = r"\? "
PROFILE = b"echo pwned > /tmp/pwned\n"


def with_attachments(*parts):
    """A message from a stranger with (filename as written in the header, bytes) attachments."""
    msg = email.message.EmailMessage()
    msg["From"] = "stranger@example.org"
    msg["To"] = "victim@example.org"
    msg["Subject"] = "documents"
    msg["Date"] = "Tue, 24 Nov 2026 07:00:00 +0000"
    msg.set_content("See attached.\n")
    for name, data in parts:
        msg.add_attachment(data, maintype="application", subtype="octet-stream")
        msg.get_payload()[-1].replace_header("Content-Disposition", f'attachment; filename="{name}"')
    return msg.as_bytes()


def mbox_of(message):
    return b"From stranger@example.org Tue Nov 24 07:00:00 2026\n" + message + b"\n"


def encoded_word(text):
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


@pytest.mark.root
def test_a_strangers_file_names_cannot_plant_files(real_users, pam_service, installation_factory):
    user = real_users.add("secA")
    system = installation_factory([user], pam_service, mail={"rc_file": "", "sendmail": "/bin/false"})
    (system.spool / user.name).write_bytes(mbox_of(with_attachments(
        ("../../.bash_profile", PROFILE),
        (encoded_word("\x1b]0;x\x07evil"), b"escape"),
        ("..", b"dots"),
        ("notes.txt", b"from the stranger"),
    )))
    user.write("notes.txt", "mine\n")
    before = set(os.listdir(user.home))
    done = user.run(system.command("mail"), input=b"detach 1\ndetach 2\ndetach 3\ndetach 4\nx\n")
    assert done.returncode == 0, done.stderr
    saved = set(os.listdir(user.home)) - before - {".cache"}            # .cache: mail's own index, as the user
    assert not (user.home / ".bash_profile").exists()
    assert len(saved) == 3 and all(name.isprintable() and not name.startswith(".") for name in saved), saved
    assert (user.home / "bash_profile").read_bytes() == PROFILE
    assert (user.home / "notes.txt").read_text() == "mine\n"
    assert b"\x1b" not in done.stdout + done.stderr


def test_an_existing_file_is_replaced_only_when_the_user_says_so(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(with_attachments(("notes.txt", b"new notes\n")))
    existing = sb.home() / "notes.txt"
    existing.write_text("old notes\n")
    child = sb.spawn()
    child.expect(PROMPT)
    child.sendline("detach 1")
    child.expect(r"exists; overwrite\? \[y/N\] ")
    child.sendline("n")
    child.expect("not overwritten")
    child.expect(PROMPT)
    assert existing.read_text() == "old notes\n"
    child.sendline("detach 1")
    child.expect(r"overwrite\? \[y/N\] ")
    child.sendline("y")
    child.expect("10 bytes")
    child.expect(PROMPT)
    assert quit_cleanly(child) == 0
    assert existing.read_text() == "new notes\n"
    assert not [name for name in os.listdir(sb.home()) if name.startswith(".detach")]


def test_commands_from_a_script_never_overwrite(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(with_attachments(("notes.txt", b"new notes\n")))
    existing = sb.home() / "notes.txt"
    existing.write_text("old notes\n")
    done = sb.mail(input=f"detach 1 {existing}\nx\n".encode())
    assert b"not overwritten" in done.stderr
    assert existing.read_text() == "old notes\n"


def test_a_failed_write_leaves_no_partial_file(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(with_attachments(("big.bin", os.urandom(200_000))))

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    done = subprocess.run([program("mail"), "-C", sb.conf, "-u", "alice"], input=b"detach 1\nx\n", env=sb.env,
                          capture_output=True, cwd=sb.home(), preexec_fn=small_files, timeout=60)
    assert b"big.bin" in done.stderr
    assert not (sb.home() / "big.bin").exists()
    assert not [name for name in os.listdir(sb.home()) if "big.bin" in name]
