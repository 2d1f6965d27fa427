"""pop3d through Python's poplib: every command, the maildrop rules, concurrency."""

import base64
import mailbox
import poplib
import re
import socket
import time

import pytest
from pop3lib import Pop3d, deliver_to, message, wire_octets
from serverlib import client_tls_context, make_certificate

S_OK = b"+OK"
S_AUTH_FAILED = b"-ERR [AUTH] invalid user name or password"
S_IN_USE = b"-ERR [IN-USE]"


@pytest.fixture
def pop3d(sandbox):
    servers = []

    def start(settings=None):
        server = Pop3d(sandbox, settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def three(sandbox):
    deliver_to(sandbox, "alice", message("one"))
    deliver_to(sandbox, "alice", message("two", body=".leading dot\n..two dots\n.\nFrom here\nend\n"))
    deliver_to(sandbox, "alice", message("three", body=("x" * 70 + "\n") * 100))
    return sandbox


def test_login_stat_list_uidl_retr_top(three, pop3d):
    pop = pop3d().client("alice")
    count, octets = pop.stat()
    assert count == 3
    _, listing, _ = pop.list()
    sizes = {int(n): int(s) for n, s in (entry.split() for entry in listing)}
    assert sum(sizes.values()) == octets
    assert pop.list(2).split() == [S_OK, b"2", str(sizes[2]).encode()]
    for number in (1, 2, 3):
        _, lines, _ = pop.retr(number)
        assert wire_octets(lines) == sizes[number]
        assert not any(line.lower().startswith((b"x-uid", b"status:", b"x-keywords", b"x-imapbase"))
                       for line in lines)
    _, lines, _ = pop.retr(2)
    assert lines[lines.index(b""):] == [b"", b".leading dot", b"..two dots", b".", b">From here", b"end"]
    _, top, _ = pop.top(2, 1)
    assert top[-2:] == [b"", b".leading dot"]
    assert b"Subject: two" in top
    _, top0, _ = pop.top(1, 0)
    assert top0[-1] == b"" and b"Subject: one" in top0
    _, uidls, _ = pop.uidl()
    uids = [entry.split()[1] for entry in uidls]
    assert all(re.fullmatch(rb"[0-9a-f]{16}", uid) for uid in uids) and len(set(uids)) == 3
    assert pop.uidl(3).split()[2] == uids[2]
    assert pop.noop().startswith(S_OK)
    assert pop.quit().startswith(S_OK)


def test_dele_takes_effect_at_quit_and_marks_read(three, pop3d):
    server = pop3d()
    pop = server.client("alice")
    pop.retr(3)
    pop.dele(1)
    with pytest.raises(poplib.error_proto, match="deleted"):
        pop.retr(1)
    with pytest.raises(poplib.error_proto, match="deleted"):
        pop.dele(1)
    assert pop.stat()[0] == 2
    _, listing, _ = pop.list()
    assert [entry.split()[0] for entry in listing] == [b"2", b"3"]
    assert len(mailbox.mbox(three.spool("alice"))) == 3       # nothing happens before QUIT
    assert b"1 message deleted" in pop.quit()
    box = mailbox.mbox(three.spool("alice"))
    assert [m["Subject"] for m in box] == ["two", "three"]
    assert box[0].get("Status") == "O" and box[1].get("Status") == "RO"


def test_rset_undeletes(three, pop3d):
    pop = pop3d().client("alice")
    pop.dele(1)
    pop.dele(2)
    assert pop.rset().startswith(S_OK)
    assert pop.stat()[0] == 3
    pop.quit()
    assert len(mailbox.mbox(three.spool("alice"))) == 3


def test_dropped_connection_deletes_nothing(three, pop3d):
    server = pop3d()
    pop = server.client("alice")
    pop.dele(1)
    pop.dele(2)
    pop.sock.shutdown(socket.SHUT_RDWR)
    pop.close()
    second = None
    for _ in range(100):              # the first session's lock goes when its process ends
        try:
            second = server.client("alice")
            break
        except poplib.error_proto:
            time.sleep(0.05)
    assert second.stat()[0] == 3
    second.quit()


def test_uidl_is_stable_across_sessions_and_deletes(three, pop3d):
    server = pop3d()
    pop = server.client("alice")
    _, first, _ = pop.uidl()
    pop.dele(2)
    pop.quit()
    pop = server.client("alice")
    _, second, _ = pop.uidl()
    pop.quit()
    before = [entry.split()[1] for entry in first]
    after = [entry.split()[1] for entry in second]
    assert after == [before[0], before[2]]


def test_mail_delivered_during_a_session_waits_for_the_next(three, pop3d):
    server = pop3d()
    pop = server.client("alice")
    pop.dele(1)
    deliver_to(three, "alice", message("four"))         # not blocked by the session
    assert pop.stat()[0] == 2
    pop.quit()
    pop = server.client("alice")
    _, listing, _ = pop.list()
    assert len(listing) == 3
    _, lines, _ = pop.retr(3)
    assert b"Subject: four" in lines
    pop.quit()


def test_second_session_gets_in_use(three, pop3d):
    server = pop3d()
    first = server.client("alice")
    second = server.client()
    second.user("alice")
    with pytest.raises(poplib.error_proto) as info:
        second.pass_("alice")
    assert info.value.args[0].startswith(S_IN_USE)
    other_user = server.client("bob")         # other users are not affected
    other_user.quit()
    first.quit()


def test_wrong_password_and_unknown_user_look_the_same(three, pop3d):
    server = pop3d()
    replies = []
    for user, password in (("alice", "bob"), ("mallory", "x")):
        pop = server.client()
        pop.user(user)
        with pytest.raises(poplib.error_proto) as info:
            pop.pass_(password)
        replies.append(info.value.args[0])
        pop.quit()
    assert replies == [S_AUTH_FAILED, S_AUTH_FAILED]


def test_capa_before_and_after_login(three, pop3d):
    server = pop3d()
    pop = server.client()
    caps = pop.capa()
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL", "IMPLEMENTATION"):
        assert cap in caps
    assert caps["SASL"] == ["PLAIN"]
    assert "STLS" not in caps                       # no certificate configured
    pop.user("alice")
    pop.pass_("alice")
    assert "USER" not in pop.capa()
    pop.quit()


def _raw_session(port, data, timeout=10):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_pipelined_commands_are_answered_in_order(three, pop3d):
    server = pop3d()
    commands = b"USER alice\r\nPASS alice\r\nSTAT\r\nUIDL 1\r\nLIST 2\r\nDELE 3\r\nRETR 1\r\nNOOP\r\nQUIT\r\n"
    out = _raw_session(server.port, commands)
    lines = out.split(b"\r\n")
    statuses = [line for line in lines if line.startswith((b"+OK", b"-ERR"))]
    assert len(statuses) == 10, out
    assert all(s.startswith(b"+OK") for s in statuses)
    assert statuses[-1].startswith(b"+OK bye (1 message deleted)")
    assert b"Subject: one" in out


def test_auth_plain(three, pop3d):
    server = pop3d()
    good = base64.b64encode(b"\0alice\0alice")
    out = _raw_session(server.port, b"AUTH PLAIN " + good + b"\r\nSTAT\r\nQUIT\r\n")
    assert b"+OK alice has 3 messages" in out and b"+OK 3 " in out
    out = _raw_session(server.port, b"AUTH PLAIN\r\n" + good + b"\r\nQUIT\r\n")
    assert b"+ \r\n+OK alice has 3 messages" in out
    out = _raw_session(server.port, b"AUTH PLAIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH PLAIN "
                       + base64.b64encode(b"bob\0alice\0alice") + b"\r\nAUTH CRAM-MD5\r\nAUTH\r\nQUIT\r\n")
    assert out.split(b"\r\n")[1:] == [b"+ ", b"-ERR authentication cancelled", b"-ERR invalid SASL response",
                                      S_AUTH_FAILED, b"-ERR unsupported authentication mechanism",
                                      b"+OK mechanisms follow", b"PLAIN", b".", b"+OK bye", b""]


def test_apop(three, pop3d, tmp_path):
    secrets = tmp_path / "apop"
    secrets.write_text("alice:tanstaaf\n")
    secrets.chmod(0o600)
    server = pop3d({"auth": {"apop_secrets": str(secrets)}})
    pop = server.client()
    assert re.search(rb"<\d+\.\d+@[^>]+>", pop.getwelcome())
    assert pop.apop("alice", "tanstaaf").startswith(S_OK)
    assert pop.stat()[0] == 3
    pop.quit()
    pop = server.client()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.apop("alice", "wrong")
    pop.quit()


def test_apop_is_refused_when_not_configured(three, pop3d):
    pop = pop3d().client()
    assert b"<" not in pop.getwelcome()
    with pytest.raises(poplib.error_proto, match="not available"):
        pop._shortcmd("APOP alice " + "0" * 32)
    pop.quit()


def test_stls_then_login(three, pop3d, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = pop3d({"tls": {"cert_file": cert, "key_file": key}})
    pop = server.client()
    assert "STLS" in pop.capa()
    pop.stls(client_tls_context(cert))
    assert "STLS" not in pop.capa()
    pop.user("alice")
    pop.pass_("alice")
    _, lines, _ = pop.retr(1)
    assert b"Subject: one" in lines
    pop.quit()


def test_implicit_tls_listener(three, pop3d, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = pop3d({"tls": {"cert_file": cert, "key_file": key},
                    "pop3": {"listen": "", "listen_tls": "127.0.0.1:0"}})
    pop = poplib.POP3_SSL("127.0.0.1", server.port, context=client_tls_context(cert), timeout=10)
    pop.user("alice")
    pop.pass_("alice")
    assert pop.stat()[0] == 3
    pop.quit()


def test_busy_reply_beyond_max_sessions(three, pop3d):
    server = pop3d({"pop3": {"max_sessions": "1"}})
    first = server.client()
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        server.client()
    first.quit()


def test_empty_and_missing_spools(sandbox, pop3d):
    sandbox.spool("bob").unlink()
    server = pop3d()
    for user in ("alice", "bob"):
        pop = server.client(user)
        assert pop.stat() == (0, 0)
        assert pop.list()[1] == [] and pop.uidl()[1] == []
        pop.quit()


def test_symlinked_spool_is_refused(sandbox, pop3d):
    spool = sandbox.spool("alice")
    spool.unlink()
    spool.symlink_to(sandbox.spool("bob"))
    pop = pop3d().client()
    pop.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\]"):
        pop.pass_("alice")


def test_user_without_a_home_still_gets_one_session(three, pop3d):
    import shutil
    shutil.rmtree(three.home("alice"))
    (three.home("alice")).write_text("not a directory")
    server = pop3d()
    first = server.client("alice")
    assert first.stat()[0] == 3
    second = server.client()
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("alice")
    first.quit()
