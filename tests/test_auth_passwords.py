"""mailsuite.server.auth: passwd-file logins, APOP, SASL PLAIN, plaintext policy, PAM, privilege drop."""

import base64
import contextlib
import glob
import grp
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import peers
import pytest
from serverlib import write_config

from mailsuite.server import auth, pam, passwords
from mailsuite.server.connection import Connection
from mailsuite.store import mailgroup

PEER = ("192.0.2.7", 40000)


@pytest.fixture
def authenticator(tmp_path, caplog):
    _, cfg = write_config(tmp_path)
    caplog.set_level(logging.INFO, logger="test-auth")
    return auth.Authenticator(cfg, "pop3", logging.getLogger("test-auth"))


def test_right_password_gives_the_user(authenticator):
    user = authenticator.authenticate("alice", "alice", PEER)
    assert user.name == "alice" and user.spool.endswith("/spool/alice")


def test_wrong_password_and_unknown_user_fail_alike(authenticator, caplog):
    assert authenticator.authenticate("alice", "bob", PEER) is None
    assert authenticator.authenticate("nobody-here", "x", PEER) is None
    assert authenticator.authenticate("../etc/passwd", "x", PEER) is None
    lines = [r.getMessage() for r in caplog.records]
    assert "login: service=pop3, user=alice, rhost=192.0.2.7, method=passwd-file, result=failed" in lines
    assert any("user=nobody-here" in line and "result=failed" in line for line in lines)


def test_success_is_logged(authenticator, caplog):
    authenticator.authenticate("bob", "bob", None)
    assert "login: service=pop3, user=bob, rhost=local, method=passwd-file, result=ok" in caplog.messages


def test_failure_delay_is_counted_from_the_start_and_grows(tmp_path, monkeypatch):
    _, cfg = write_config(tmp_path, {"auth": {"failure_delay": "3s", "max_login_failures": "2"}})
    slept = []
    monkeypatch.setattr(auth.time, "sleep", slept.append)
    authenticator = auth.Authenticator(cfg, "pop3", logging.getLogger("test-auth"))
    assert authenticator.authenticate("alice", "wrong", PEER) is None
    assert authenticator.authenticate("alice", "alice", PEER) is not None
    assert not authenticator.exhausted
    assert authenticator.authenticate("nobody-here", "x", PEER) is None
    assert authenticator.exhausted
    assert len(slept) == 2
    assert 2 < slept[0] <= 3 and 5 < slept[1] <= 6          # the check's own time is part of the delay


def test_a_check_slower_than_the_delay_ends_at_a_whole_step(tmp_path, monkeypatch):
    _, cfg = write_config(tmp_path, {"auth": {"failure_delay": "1s"}})
    clock = iter([100.0, 102.5])                              # started, then the check took 2.5 s
    monkeypatch.setattr(auth.time, "monotonic", lambda: next(clock))
    slept = []
    monkeypatch.setattr(auth.time, "sleep", slept.append)
    authenticator = auth.Authenticator(cfg, "pop3", logging.getLogger("test-auth"))
    assert authenticator.authenticate("alice", "wrong", PEER) is None
    assert slept == [pytest.approx(0.5)]


def test_system_accounts_below_first_valid_uid_are_refused(tmp_path):
    (tmp_path / "passwd").write_text(f"daemon:{passwords.hash_password('pw')}:1:1:Daemon:/\n")
    _, cfg = write_config(tmp_path, sandbox=False)
    authenticator = auth.Authenticator(cfg, "pop3", logging.getLogger("test-auth"))
    assert authenticator.authenticate("daemon", "pw", PEER) is None


def _apop_config(tmp_path, mode=0o600):
    secrets = tmp_path / "apop"
    secrets.write_text("# comment\nalice:tanstaaf\n")
    secrets.chmod(mode)
    _, cfg = write_config(tmp_path, {"auth": {"apop_secrets": str(secrets)}})
    return auth.Authenticator(cfg, "pop3", logging.getLogger("test-auth"))


def test_apop_example_from_rfc_1939(tmp_path):
    authenticator = _apop_config(tmp_path)
    challenge = "<1896.697170952@dbc.mtview.ca.us>"
    assert authenticator.apop_enabled()
    assert authenticator.authenticate_apop("alice", challenge, "c4c9334bac560ecc979e58001b3e22fb", PEER)
    assert authenticator.authenticate_apop("alice", challenge, "0" * 32, PEER) is None
    assert authenticator.authenticate_apop("bob", challenge, "c4c9334bac560ecc979e58001b3e22fb", PEER) is None


def test_apop_secrets_readable_by_others_are_refused(tmp_path):
    authenticator = _apop_config(tmp_path, mode=0o644)
    challenge = "<1.2@x>"
    digest = hashlib.md5((challenge + "tanstaaf").encode()).hexdigest()
    assert authenticator.authenticate_apop("alice", challenge, digest, PEER) is None


@pytest.mark.parametrize("raw, expected", [
    (b"\0alice\0secret", ("", "alice", "secret")),
    (b"admin\0alice\0p\xc3\xa4ss", ("admin", "alice", "päss")),
    (b"\0alice\0", ("", "alice", "")),
])
def test_sasl_plain_decodes(raw, expected):
    assert auth.decode_sasl_plain(base64.b64encode(raw)) == expected


@pytest.mark.parametrize("b64", [b"", b"not base64!", base64.b64encode(b"alice\0secret"),
                                 base64.b64encode(b"\0\0secret"), base64.b64encode(b"a\0b\0c\0d"),
                                 base64.b64encode(b"\0alice\0\xff")])
def test_sasl_plain_rejects_garbage(b64):
    with pytest.raises(ValueError):
        auth.decode_sasl_plain(b64)


def test_plaintext_only_over_tls_or_loopback(tmp_path):
    _, cfg = write_config(tmp_path)
    conn = Connection(rfd=0, wfd=1)
    conn.peer = ("127.0.0.1", 1)
    assert auth.plaintext_allowed(cfg, conn)
    conn.peer = ("192.0.2.1", 1)
    assert not auth.plaintext_allowed(cfg, conn)
    conn.is_tls = True
    assert auth.plaintext_allowed(cfg, conn)
    _, open_cfg = write_config(tmp_path, {"auth": {"allow_plaintext": "yes"}})
    conn.is_tls = False
    assert auth.plaintext_allowed(open_cfg, conn)


# --- PAM, through a private configuration directory --------------------------

@pytest.fixture
def pam_dir(tmp_path):
    modules = glob.glob("/usr/lib/*/security/pam_exec.so") + glob.glob("/usr/lib*/security/pam_exec.so")
    if not pam.available():
        peers.missing("libpam is not installed", "libpam0g")
    if not modules:
        peers.missing("pam_exec.so is not installed", "libpam-modules")
    check = tmp_path / "check-password"
    check.write_text('#!/bin/sh\nread -r pw\n[ "$PAM_USER" = carol ] && [ "$pw" = "open sesame" ]\n')
    check.chmod(0o755)
    confdir = tmp_path / "pam.d"
    confdir.mkdir()
    (confdir / "mailsuite-test").write_text(
        f"auth required pam_exec.so quiet expose_authtok {check}\naccount required pam_permit.so\n")
    (confdir / "mailsuite-deny").write_text("auth required pam_deny.so\naccount required pam_permit.so\n")
    return str(confdir)


def test_pam_conversation_passes_the_password(pam_dir):
    assert pam.authenticate("mailsuite-test", "carol", "open sesame", confdir=pam_dir, rhost="127.0.0.1")[0]
    ok, reason = pam.authenticate("mailsuite-test", "carol", "wrong", confdir=pam_dir)
    assert not ok and reason
    assert not pam.authenticate("mailsuite-test", "dave", "open sesame", confdir=pam_dir)[0]


def test_pam_deny(pam_dir):
    assert not pam.authenticate("mailsuite-deny", "carol", "open sesame", confdir=pam_dir)[0]


def test_shipped_pam_service_file_is_valid():
    path = os.path.join(os.path.dirname(__file__), "..", "etc", "pam.d", "mailsuite")
    text = open(path).read()
    assert "auth" in text and "account" in text


# --- privilege drop ----------------------------------------------------------

def test_drop_privileges_is_a_no_op_in_the_sandbox(tmp_path):
    _, cfg = write_config(tmp_path)
    before = os.getresuid(), os.getresgid(), os.getgroups()
    auth.drop_privileges(auth.UserDB(cfg).lookup("alice"), cfg)
    assert (os.getresuid(), os.getresgid(), os.getgroups()) == before


@pytest.mark.root
def test_drop_privileges_for_good(tmp_path):
    (tmp_path / "passwd").write_text(f"carol:{passwords.hash_password('pw')}:54321:54322:Carol:/nonexistent\n")
    _, cfg = write_config(tmp_path, sandbox=False)
    user = auth.UserDB(cfg).lookup("carol")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            auth.drop_privileges(user, cfg)
            try:
                os.setuid(0)
                regained = "yes"
            except PermissionError:
                regained = "no"
            try:
                open("/etc/shadow").close()
                shadow = "readable"
            except PermissionError:
                shadow = "denied"
            report = f"{os.getresuid()} {os.getresgid()} {os.getgroups()} {regained} {shadow}"
            os.write(write_end, report.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    report = os.read(read_end, 1000).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    mail_gid = grp.getgrnam("mail").gr_gid
    assert report == f"(54321, 54321, 54321) (54322, 54322, {mail_gid}) [] no denied"


@pytest.mark.root
def test_reserved_mail_group_writes_the_spool_directory_only_when_enabled(tmp_path):
    """A 2775 root:mail directory: the dropped session creates a file there only inside mailgroup.enabled()."""
    (tmp_path / "passwd").write_text(f"carol:{passwords.hash_password('pw')}:54321:54322:Carol:/nonexistent\n")
    _, cfg = write_config(tmp_path, sandbox=False)
    user = auth.UserDB(cfg).lookup("carol")
    spool = Path(tempfile.mkdtemp(prefix="mailsuite-spool-"))    # a path carol may traverse
    os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
    spool.chmod(0o2775)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            auth.drop_privileges(user, cfg)
            outcome = []
            for name, context in (("outside", contextlib.nullcontext()), ("inside", mailgroup.enabled())):
                try:
                    with context:
                        os.close(os.open(spool / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                    outcome.append(f"{name}:created")
                except PermissionError:
                    outcome.append(f"{name}:denied")
            outcome.append(str(os.getresgid()[1]))
            os.write(write_end, " ".join(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    report = os.read(read_end, 1000).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    shutil.rmtree(spool)
    assert report == "outside:denied inside:created 54322"


@pytest.mark.root
def test_drop_privileges_refuses_root(tmp_path):
    (tmp_path / "passwd").write_text(f"toor:{passwords.hash_password('pw')}:0:0:Root:/root\n")
    _, cfg = write_config(tmp_path, sandbox=False)
    with pytest.raises(PermissionError):
        auth.drop_privileges(auth.UserDB(cfg).lookup("toor"), cfg)


def test_unknown_user_names_are_logged_printable(authenticator, caplog):
    authenticator.authenticate("evil\rname\x1b[2J", "x", PEER)
    assert any("user=evil?name?[2J," in line for line in caplog.messages)


def test_the_cost_of_new_hashes_is_a_setting_and_any_stored_cost_is_checked():
    """New hashes take [auth] scrypt_cost; a stored hash is checked at the cost it was made with."""
    cheap, dear = passwords.hash_password("pw", 11), passwords.hash_password("pw", 15)
    assert cheap.startswith("$scrypt$ln=11,r=8,p=1$") and dear.startswith("$scrypt$ln=15,r=8,p=1$")
    assert passwords.verify_password("pw", cheap) and passwords.verify_password("pw", dear)
    assert not passwords.verify_password("pw!", dear)
    assert passwords.work_of(dear) == 15 and passwords.work_of("$scrypt$ln=14,r=16,p=2$AAAA$AAAA") == 16
    with pytest.raises(ValueError):
        passwords.hash_password("pw", 4)
