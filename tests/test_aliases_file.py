"""The aliases(5) parser and compiler, and identities of command deliveries in system mode."""

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from mailsuite.mta import aliases
from mailsuite.mta.aliases import AliasError, Aliases

REPO = Path(__file__).resolve().parent.parent


def test_shipped_example_parses():
    entries = aliases.parse(str(REPO / "etc" / "aliases"))
    assert entries["postmaster"] == ["root"]
    assert entries["mailer-daemon"] == ["postmaster"]
    assert entries["nobody"] == ["/dev/null"]


def test_quoting_and_continuations(tmp_path):
    path = tmp_path / "aliases"
    path.write_text('list: alice,\n\tbob , "|/bin/prog -a \\"x, y\\"",\n  /var/mail/archive\n# c\nB: x\n')
    entries = aliases.parse(str(path))
    assert entries["list"] == ["alice", "bob", '|/bin/prog -a "x, y"', "/var/mail/archive"]
    assert entries["b"] == ["x"]


@pytest.mark.parametrize("text, line", [(" alice\n", 1), ("ok: a\nno colon here\n", 2), ("empty:\n", 1)])
def test_errors_name_the_line(tmp_path, text, line):
    path = tmp_path / "aliases"
    path.write_text(text)
    with pytest.raises(AliasError, match=f"{path}:{line}:"):
        aliases.parse(str(path))


def test_compiled_database_matches_the_file(tmp_path):
    path = tmp_path / "aliases"
    path.write_text("a: b, c\nd: e\n")
    assert aliases.compile(str(path)) == (2, 4, 5)
    table = Aliases(str(path))
    assert table._db is not None                  # the database is current: used
    assert table.lookup("A") == ["b", "c"]
    assert table.lookup("zz") is None


def test_newaliases_reports_syntax_errors(sandbox):
    (sandbox.dir / "aliases").write_text("broken line\n")
    result = sandbox.run("sendmail", "-bi")
    assert result.returncode == os.EX_DATAERR
    assert b":1:" in result.stderr


@pytest.fixture
def open_tmp():
    """A directory other users can reach (pytest's tmp_path is root-only)."""
    import shutil
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="mailsuite-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.root
def test_commands_never_run_as_root(open_tmp):
    """System mode: root's aliases run as default_privs, a user's .forward as the user."""
    tmp_path = open_tmp
    nobody = pwd.getpwnam("nobody")
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    forward = home / ".forward"
    forward.write_text(f'"|id -u > {out}/forward"\n')
    os.chown(forward, nobody.pw_uid, nobody.pw_gid)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o1777)
    spool.chmod(0o1777)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"tuser::{nobody.pw_uid}:{nobody.pw_gid}:Test User:{home}\n")
    passwd.chmod(0o600)
    (tmp_path / "aliases").write_text(f'root-cmd: "|id -u > {out}/alias"\n')
    conf = tmp_path / "mailsuite.conf"
    conf.write_text(
        f"[mailsuite]\nhostname = localhost\nlocal_domains = localhost\nspool_dir = {spool}\n"
        f"queue_dir = {tmp_path}/queue\nmaildrop_dir = {tmp_path}/maildrop\nstate_dir = {tmp_path}/state\n"
        f"passwd_file = {passwd}\nlog_socket =\n\n[queue]\naliases = {tmp_path}/aliases\n")
    (tmp_path / "maildrop").mkdir(mode=0o1733)
    sendmail = os.path.join(os.path.dirname(os.sys.executable), "sendmail")
    result = subprocess.run([sendmail, "-C", str(conf), "-odi", "-i", "root-cmd", "tuser"],
                            input=b"Subject: who\n\nx\n", capture_output=True)
    assert result.returncode == 0, result.stderr
    assert (out / "alias").read_text().strip() == str(nobody.pw_uid)
    assert (out / "forward").read_text().strip() == str(nobody.pw_uid)
