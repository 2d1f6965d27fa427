"""Each real caller's sendmail invocation, run verbatim against the sandbox, ends in the right spool."""

import pytest
from mta_helpers import MESSAGE, spool_messages, wait_for_messages

PHP_MESSAGE = (b"To: bob@localhost\r\nSubject: php mail()\r\nFrom: webapp@localhost\r\n"
               b"Bcc: alice@localhost\r\n\r\nsent by PHP\r\n.\r\nstill the body\r\n")


def test_php_mail_uses_t_and_i(sandbox):
    result = sandbox.run("sendmail", "-t", "-i", input=PHP_MESSAGE)
    assert result.returncode == 0, result.stderr
    bob = wait_for_messages(sandbox.spool("bob"), 1)
    alice = wait_for_messages(sandbox.spool("alice"), 1)
    assert len(bob) == len(alice) == 1
    for msg in bob + alice:
        assert msg["Bcc"] is None
        assert msg["Subject"] == "php mail()"
        assert b"still the body" in msg.get_payload(decode=True)     # -i: the dot line is data


def test_git_send_email(sandbox):
    result = sandbox.run("sendmail", "-i", "--", "alice@localhost", "bob@localhost", input=MESSAGE)
    assert result.returncode == 0, result.stderr
    assert len(wait_for_messages(sandbox.spool("alice"), 1)) == 1
    assert len(wait_for_messages(sandbox.spool("bob"), 1)) == 1


def test_mutt(sandbox):
    result = sandbox.run("sendmail", "-oem", "-oi", "--", "bob@localhost", input=MESSAGE)
    assert result.returncode == 0, result.stderr
    assert len(wait_for_messages(sandbox.spool("bob"), 1)) == 1


def test_debian_cron(sandbox):
    body = b"Subject: Cron <root@host> run-parts /etc/cron.hourly\n\noutput\n"
    result = sandbox.run("sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "alice", input=body)
    assert result.returncode == 0, result.stderr
    [msg] = wait_for_messages(sandbox.spool("alice"), 1)
    assert msg["From"].startswith("CronDaemon <")                # -F gives the From: name


def test_cronie(sandbox):
    body = b"To: bob\nSubject: cronie output\n\noutput\n"
    result = sandbox.run("sendmail", "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root", input=body)
    assert result.returncode == 0, result.stderr
    [msg] = spool_messages(sandbox.spool("bob"))                  # -odi: delivered before exit
    assert msg.get_from().startswith("root@")
    assert msg["To"] == "bob@localhost"                           # unqualified address qualified


def test_sender_and_full_name(sandbox):
    result = sandbox.run("sendmail", "-f", "alice@localhost", "-F", "Alice Liddell", "bob", input=b"\nno header\n")
    assert result.returncode == 0, result.stderr
    [msg] = wait_for_messages(sandbox.spool("bob"), 1)
    assert msg["From"] == "Alice Liddell <alice@localhost>"
    assert msg["Return-Path"] == "<alice@localhost>"
    for name in ("Date", "Message-ID", "Received"):
        assert msg[name], name


def test_r_is_f(sandbox):
    assert sandbox.run("sendmail", "-odi", "-r", "bob@localhost", "alice", input=MESSAGE).returncode == 0
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg["Return-Path"] == "<bob@localhost>"


def test_dsn_flags_and_historical_options_are_accepted(sandbox):
    result = sandbox.run("sendmail", "-odi", "-N", "success,failure", "-R", "hdrs", "-V", "envid-1",
                         "-X", "/tmp/never-written", "-oQ/var/spool", "-om", "-v", "-G", "-U", "-h", "12",
                         "-L", "label", "-Ovalue=1", "alice", input=MESSAGE)
    assert result.returncode == 0, result.stderr
    assert len(spool_messages(sandbox.spool("alice"))) == 1


@pytest.mark.parametrize("data", [
    b"Subject: lf\n\none\ntwo\n",
    b"Subject: crlf\r\n\r\none\r\ntwo\r\n",
    b"Subject: mixed\r\n\none\r\ntwo\n",
])
def test_line_ends(sandbox, data):
    assert sandbox.run("sendmail", "-odi", "-i", "alice", input=data).returncode == 0
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg.get_payload() == "one\ntwo\n"


def test_dot_ends_input_without_i(sandbox):
    assert sandbox.run("sendmail", "-odi", "alice", input=b"Subject: dot\n\nbefore\n.\nafter\n").returncode == 0
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg.get_payload() == "before\n"


@pytest.mark.parametrize("args, status", [
    (["--", "-oQ/tmp"], 64),
    (["alice", "-bob"], 64),
    (["-f", "-oX", "alice"], 64),
    (["alice\nbcc: evil@x"], 65),
    (["-f", "a\rb@localhost", "alice"], 65),
    ([], 64),
])
def test_hostile_addresses_are_refused(sandbox, args, status):
    result = sandbox.run("sendmail", "-odi", *args, input=MESSAGE)
    assert result.returncode == status, result.stderr
    assert result.stderr.count(b"\n") == 1                        # one line
    assert spool_messages(sandbox.spool("alice")) == []
    assert not list((sandbox.dir / "maildrop").iterdir())


def test_nul_in_a_header_recipient_is_refused(sandbox):
    # argv cannot carry NUL; a -t header can
    result = sandbox.run("sendmail", "-odi", "-t", input=b"To: alice\0@localhost\nSubject: x\n\nx\n")
    assert result.returncode == 65
    assert spool_messages(sandbox.spool("alice")) == []


def test_unknown_option_is_a_usage_error(sandbox):
    assert sandbox.run("sendmail", "-Z", "alice", input=MESSAGE).returncode == 64


def test_t_without_recipients(sandbox):
    result = sandbox.run("sendmail", "-t", input=b"Subject: nobody\n\nx\n")
    assert result.returncode == 64
    assert b"no recipient" in result.stderr


@pytest.mark.root
def test_untrusted_sender_gets_authentication_warning(sandbox, tmp_path):
    import os
    import pwd
    nobody = pwd.getpwnam("nobody")
    # a drop file written by an untrusted uid: the pickup believes the file owner
    from mailsuite.core import config
    from mailsuite.mta.dropdir import DropWriter
    cfg = sandbox.cfg
    writer = DropWriter(cfg.mailsuite.maildrop_dir, {"sender": "ceo@localhost", "recipients": ["alice"],
                                                     "login": "nobody"})
    writer.write(MESSAGE)
    os.fchown(writer.file.fileno(), nobody.pw_uid, nobody.pw_gid)
    writer.commit()
    assert sandbox.run("sendmail", "-q").returncode == 0
    [msg] = spool_messages(sandbox.spool("alice"))
    assert "nobody set sender to ceo@localhost using -f" in msg["X-Authentication-Warning"]
    assert msg["Return-Path"] == "<ceo@localhost>"
    assert config  # imported for the fixture's config type


def test_mail_waits_in_the_maildrop_without_a_runner(sandbox):
    result = sandbox.run("sendmail", "-odq", "alice", input=MESSAGE)
    assert result.returncode == 0
    assert len(list((sandbox.dir / "maildrop").iterdir())) == 1
    assert spool_messages(sandbox.spool("alice")) == []
    assert b"waiting for pickup" in sandbox.run("sendmail", "-bp").stdout
    assert sandbox.run("sendmail", "-q").returncode == 0
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert not list((sandbox.dir / "maildrop").iterdir())
