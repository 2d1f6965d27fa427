"""`mailsuite check`: one line per problem an operator can fix, nothing when all is well."""

import socket
import subprocess

import pytest
from mta_helpers import set_config


def check(sandbox):
    done = sandbox.run("mailsuite", "check")
    return done.returncode, done.stdout.decode().splitlines()


def test_a_fresh_sandbox_is_ok(sandbox):
    status, lines = check(sandbox)
    assert status == 0 and lines == [f"{sandbox.conf}: ok"]


def test_bytes_before_the_first_message_are_named_with_a_repair_that_works(sandbox):
    spool = sandbox.spool("alice")
    spool.write_bytes(b"garbage\nmore garbage\nFrom x@y Mon Nov 23 10:00:00 2026\nSubject: kept\n\nbody\n")
    damaged = spool.read_bytes()
    reading = sandbox.run("mail", "-u", "alice", "-H")
    assert reading.returncode == 66
    assert reading.stderr.decode() == (f"mail: {spool}: not an mbox file: 21 bytes before its first From_ line "
                                       "(`mailsuite check` says how to remove them)\n")
    delivery = sandbox.run("mail.local", "alice", input=b"Subject: new\n\nwaits\n")
    assert delivery.returncode == 75                               # EX_TEMPFAIL: the MTA keeps it meanwhile
    assert spool.read_bytes() == damaged
    status, [line] = check(sandbox)
    assert status == 78
    assert f"{spool}: 21 bytes before the first From_ line" in line
    repair = line.split("remove them with `", 1)[1].split("`", 1)[0]
    subprocess.run(["sh", "-c", repair], check=True)
    assert spool.read_bytes().startswith(b"From x@y")
    assert check(sandbox)[0] == 0
    assert b"kept" in sandbox.run("mail", "-u", "alice", "-H").stdout


def test_spool_objects_modes_queue_and_ports(sandbox):
    sandbox.spool("bob").unlink()
    sandbox.spool("bob").mkdir()                                    # every delivery to bob would fail
    sandbox.spool("alice").chmod(0o644)
    (sandbox.dir / "spool" / "nosuchuser").write_bytes(b"")
    corrupt = sandbox.dir / "queue" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "X").write_bytes(b"bad")
    with socket.socket() as mute:                                   # bound, never listening: answers nobody
        mute.bind(("127.0.0.1", 0))
        set_config(sandbox, "pop3", "listen", f"127.0.0.1:{mute.getsockname()[1]}")
        set_config(sandbox, "imap", "listen", "nonsense")
        status, lines = check(sandbox)
    assert status == 78
    text = "\n".join(lines)
    assert f"{sandbox.spool('bob')}: not a regular file" in text
    assert f"{sandbox.spool('alice')}: mode 0644: others may read it" in text
    assert "nosuchuser: no user 'nosuchuser'" in text
    assert f"{corrupt}: 1 damaged file(s) set aside" in text
    assert "[pop3] listen 127.0.0.1:" in text and "in use by something that does not answer" in text
    assert "[imap] listen nonsense: not HOST:PORT" in text
    assert all(line.startswith("mailsuite check: ") for line in lines)


@pytest.mark.root
def test_a_spool_owned_by_someone_else_is_named(tmp_path, real_users):
    victim = real_users.add("own")
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o1777)
    spool.chmod(0o1777)
    box = spool / victim.name
    box.write_bytes(b"")
    box.chmod(0o600)                                                # root's, not the user's
    conf = tmp_path / "mailsuite.conf"
    conf.write_text(f"[mailsuite]\nspool_dir = {spool}\nqueue_dir = {tmp_path}/queue\n"
                    f"maildrop_dir = {tmp_path}/maildrop\nlog_socket =\n[smtp]\nlisten =\n[pop3]\nlisten =\n"
                    f"[imap]\nlisten =\n")
    from conftest import program
    done = subprocess.run([program("mailsuite"), "-C", str(conf), "check"], capture_output=True, text=True)
    assert done.returncode == 78
    assert f"{box}: owned by uid 0, not {victim.name} ({victim.uid}); chown {victim.name} {box}" in done.stdout


def test_password_hashes_cheaper_than_the_configured_cost_are_named(sandbox):
    """[auth] scrypt_cost is what a passwd-file hash should cost at least; a cheaper one is named."""
    from mailsuite.server.passwords import hash_password
    passwd = sandbox.dir / "passwd"
    lines = passwd.read_text().splitlines()
    name, _, rest = lines[1].partition(":")
    lines[1] = f"{name}:{hash_password(name, 12)}:{rest.split(':', 1)[1]}"
    passwd.write_text("\n".join(lines) + "\n")
    status, found = check(sandbox)
    assert status == 78 and len(found) == 1
    assert f"{name}'s password hash costs 12, below [auth] scrypt_cost 14" in found[0]
    set_config(sandbox, "auth", "scrypt_cost", "12")
    assert check(sandbox)[0] == 0
    assert b"+OK" in sandbox.run("pop3d", input=f"USER {name}\r\nPASS {name}\r\nQUIT\r\n".encode()).stdout
