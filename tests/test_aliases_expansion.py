"""aliases(5), :include:, |program, /file, loops and ~/.forward, through real submissions."""

import os

from mta_helpers import MESSAGE, spool_messages


def write_aliases(sandbox, text, compile=True):
    path = sandbox.dir / "aliases"
    path.write_text(text)
    if compile:
        result = sandbox.run("sendmail", "-bi")
        assert result.returncode == 0, result.stderr
        assert b"aliases" in result.stdout
    return path


def send(sandbox, *rcpts, data=MESSAGE):
    result = sandbox.run("sendmail", "-odi", "-i", "-f", "sender@example.org", *rcpts, input=data)
    assert result.returncode == 0, result.stderr


def test_list_alias_with_continuation_and_case(sandbox):
    write_aliases(sandbox, "# staff\nStaff: alice,\n   bob\n")
    send(sandbox, "staff@localhost")
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert len(spool_messages(sandbox.spool("bob"))) == 1
    [msg] = spool_messages(sandbox.spool("bob"))
    assert msg["Delivered-To"] == "staff@localhost"


def test_newaliases_by_name_compiles_a_database(sandbox, tmp_path):
    write_aliases(sandbox, "team: alice\n", compile=False)
    link = tmp_path / "newaliases"
    link.symlink_to(os.path.join(os.path.dirname(__import__("sys").executable), "sendmail"))
    import subprocess
    result = subprocess.run([str(link), "-C", sandbox.conf], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert (sandbox.dir / "aliases.db").exists()
    send(sandbox, "team")
    assert len(spool_messages(sandbox.spool("alice"))) == 1


def test_stale_database_is_not_used(sandbox):
    path = write_aliases(sandbox, "team: alice\n")
    path.write_text("team: bob\n")                 # edited, newaliases forgotten
    send(sandbox, "team")
    assert len(spool_messages(sandbox.spool("bob"))) == 1
    assert spool_messages(sandbox.spool("alice")) == []


def test_include_file(sandbox, tmp_path):
    members = tmp_path / "members"
    members.write_text("alice\n# comment\nbob@localhost\n")
    members.chmod(0o644)
    write_aliases(sandbox, f"list: :include:{members}\n")
    send(sandbox, "list")
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert len(spool_messages(sandbox.spool("bob"))) == 1


def test_writable_include_file_is_refused(sandbox, tmp_path):
    members = tmp_path / "members"
    members.write_text("alice\n")
    members.chmod(0o666)
    write_aliases(sandbox, f"list: :include:{members}, bob\n")
    send(sandbox, "list")
    assert spool_messages(sandbox.spool("alice")) == []
    assert len(spool_messages(sandbox.spool("bob"))) == 1


def test_program_gets_the_message_and_no_address_in_a_shell(sandbox, tmp_path):
    out = tmp_path / "out"
    write_aliases(sandbox, f'pipe: "|cat > {out}; echo \\"$SENDER $RECIPIENT\\" >> {out}"\n')
    evil = "pipe+$(touch${IFS}" + str(tmp_path) + "/pwned)@localhost"
    send(sandbox, "pipe@localhost")
    text = out.read_text()
    assert text.startswith("From sender@example.org ")
    assert "Subject: hello" in text
    assert text.rstrip().endswith("sender@example.org pipe@localhost")
    send(sandbox, evil)                           # unknown user: bounces, never reaches a shell
    assert not (tmp_path / "pwned").exists()


def test_program_exit_codes(sandbox, tmp_path):
    write_aliases(sandbox, 'fail: "|exit 67"\nlater: "|exit 75"\n')
    send(sandbox, "fail", "later")
    from mailsuite.mta.queue import Queue
    queue = Queue(sandbox.cfg)
    [(state, qid)] = [(s, q) for s, q in queue.ids() if queue.load(q).sender]
    assert state == "deferred"                    # 75: try again later
    env = queue.load(qid)
    assert env.result("fail@localhost", "")["s"] == "bounced"
    [bounce] = spool_messages(sandbox.spool("alice")) or [None]  # no alias for sender: goes remote
    assert bounce is None


def test_file_delivery(sandbox, tmp_path):
    target = tmp_path / "archive"
    write_aliases(sandbox, f"archive: {target}\nnull: /dev/null\n")
    send(sandbox, "archive", "null")
    import mailbox
    [msg] = list(mailbox.mbox(str(target)))
    assert msg["Subject"] == "hello"
    assert msg["Delivered-To"] == "archive@localhost"


def test_alias_loop_bounces_instead_of_spinning(sandbox):
    write_aliases(sandbox, "a: b\nb: a\npostmaster: alice\n")
    result = sandbox.run("sendmail", "-odi", "-i", "-f", "bob@localhost", "a", input=MESSAGE)
    assert result.returncode == 0
    [bounce] = spool_messages(sandbox.spool("bob"))
    assert bounce.get_content_type() == "multipart/report"
    assert "loop" in bounce.as_string()


def test_self_reference_keeps_a_copy(sandbox, tmp_path):
    archive = tmp_path / "copy"
    write_aliases(sandbox, f"alice: alice, {archive}\n")
    send(sandbox, "alice")
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert archive.exists()


def test_forward_file(sandbox, tmp_path):
    home = sandbox.home("alice")
    forward = home / ".forward"
    out = tmp_path / "procmail-ish"
    forward.write_text(f'bob, \\alice, "|cat > {out}"\n')
    forward.chmod(0o644)
    send(sandbox, "alice")
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert len(spool_messages(sandbox.spool("bob"))) == 1
    assert b"Subject: hello" in out.read_bytes()


def test_group_writable_forward_is_ignored(sandbox):
    forward = sandbox.home("alice") / ".forward"
    forward.write_text("bob\n")
    forward.chmod(0o664)
    send(sandbox, "alice")
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert spool_messages(sandbox.spool("bob")) == []


def test_forward_loop_between_users(sandbox):
    (sandbox.home("alice") / ".forward").write_text("bob\n")
    (sandbox.home("bob") / ".forward").write_text("alice\n")
    for user in ("alice", "bob"):
        (sandbox.home(user) / ".forward").chmod(0o644)
    write_aliases(sandbox, "postmaster: alice\n")
    result = sandbox.run("sendmail", "-odi", "-i", "-f", "", "alice", input=MESSAGE)
    assert result.returncode == 0
    # a loop from the null sender: no bounce back, the postmaster hears of it (and loops too: discarded)
    assert spool_messages(sandbox.spool("bob")) == []


def test_bv_reports_routes(sandbox):
    write_aliases(sandbox, "staff: alice, carol@example.org\n")
    result = sandbox.run("sendmail", "-bv", "staff", "nosuchuser")
    assert result.returncode == 67
    out = result.stdout.decode()
    assert "deliverable: mailer local, user alice" in out
    assert "mailer smtp, address carol@example.org" in out
    assert "nosuchuser@localhost... undeliverable" in out

