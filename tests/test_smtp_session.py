"""The SMTP daemon against Python's smtplib and raw sockets: every command, the relay policy, limits."""

import smtplib

import pytest
from smtp_helpers import (
    S221_BYE,
    S250_OK,
    S252_CANNOT_VRFY,
    S354_START_DATA,
    S421_CLOSING,
    S452_TOO_MANY_RCPTS,
    S500_UNKNOWN,
    S501_SYNTAX,
    S503_BAD_SEQUENCE,
    S550_REJECTED,
    S552_TOO_BIG,
    S554_FAILED,
    Instance,
)

MESSAGE = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nHello Bob.\r\n"


@pytest.fixture
def host(tmp_path):
    instance = Instance(tmp_path / "host", smtp={"max_recipients": "3", "max_message_size": "20000",
                                                  "max_errors": "8"})
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def outsider(tmp_path):
    """A daemon that treats loopback as a foreign network: no relaying for it."""
    instance = Instance(tmp_path / "strict", smtp={"relay_networks": "192.0.2.0/24"})
    instance.start()
    yield instance
    instance.stop()


def test_smtplib_sends_a_message_that_is_queued_with_received_header(host):
    with smtplib.SMTP("127.0.0.1", host.port) as client:
        refused = client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert refused == {}
    [(envelope, data)] = host.queued()
    assert envelope.sender == "alice@example.test"
    assert envelope.recipients == ["bob@example.test"]
    assert data.startswith(b"Received: from ")
    assert b"by mx.example.test (mailsuite) with ESMTP" in data
    assert data.endswith(b"\n\nHello Bob.\n")
    assert b"\r" not in data


def test_received_names_the_queue_id_the_tls_and_the_protocol_as_rfc_3848(tmp_path):
    """`with ESMTPSA id QID` and the cipher, as Postfix writes them: a hop tracer can follow the message."""
    import re
    import ssl

    from serverlib import make_certificate
    cert, key = make_certificate(tmp_path)
    instance = Instance(tmp_path / "tls", smtp={"tls_cert_file": cert, "tls_key_file": key},
                        auth={"allow_plaintext": "yes"}).start()
    try:
        with smtplib.SMTP("127.0.0.1", instance.port) as client:
            client.starttls(context=ssl.create_default_context(cafile=cert))
            client.login("alice", "alice")
            client.mail("alice@example.test")
            client.rcpt("bob@example.test")
            code, reply = client.data(MESSAGE)
        queue_id = reply.decode().rsplit(" ", 1)[1]
        [(envelope, data)] = instance.queued()
    finally:
        instance.stop()
    header = data.split(b"\n\n", 1)[0].decode()
    received = re.match(r"Received: (.*?)(?=\n\S)", header, re.S).group(1)
    assert re.search(r"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)", received), received
    assert f"by mx.example.test (mailsuite) with ESMTPSA id {queue_id}" in received, received
    assert "for <bob@example.test>;" in received


def test_ehlo_advertises_the_extensions(host):
    with smtplib.SMTP("127.0.0.1", host.port) as client:
        code, _ = client.ehlo("client.example")
        assert code == S250_OK
        for extension in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "auth"):
            assert client.has_extn(extension), extension
        assert client.esmtp_features["size"] == "20000"
        assert not client.has_extn("starttls")            # no certificate configured


def test_helo_noop_rset_vrfy_help_quit(host):
    client = host.connect()
    assert client.reply()[0] == 220
    assert client.command("HELO client.example")[0] == S250_OK
    assert client.command("NOOP")[0] == S250_OK
    assert client.command("RSET")[0] == S250_OK
    assert client.command("VRFY alice")[0] == S252_CANNOT_VRFY
    code, lines = client.command("HELP")
    assert code == 214 and "MAIL" in lines[0]
    assert client.command("QUIT")[0] == S221_BYE
    assert client.closed()


def test_bad_sequences_are_refused(host):
    client = host.connect()
    client.reply()
    assert client.command("MAIL FROM:<a@example.test>")[0] == S503_BAD_SEQUENCE   # before EHLO
    client.command("EHLO client.example")
    assert client.command("RCPT TO:<bob@example.test>")[0] == S503_BAD_SEQUENCE    # before MAIL
    assert client.command("DATA")[0] == S503_BAD_SEQUENCE
    assert client.command("MAIL FROM:<a@example.test>")[0] == S250_OK
    assert client.command("MAIL FROM:<a@example.test>")[0] == S503_BAD_SEQUENCE    # nested MAIL
    assert client.command("DATA")[0] == S503_BAD_SEQUENCE                         # no recipient yet
    assert client.command("RSET")[0] == S250_OK
    assert client.command("RCPT TO:<bob@example.test>")[0] == S503_BAD_SEQUENCE    # RSET ended it


def test_syntax_errors(host):
    client = host.connect()
    client.reply()
    assert client.command("EHLO")[0] == S501_SYNTAX
    client.command("EHLO client.example")
    assert client.command("MAIL TO:<a@example.test>")[0] == S501_SYNTAX
    assert client.command("MAIL FROM:<a@example.test> FOO=BAR")[0] == 555
    assert client.command("MAIL FROM:<not an address>")[0] in (S501_SYNTAX, 553)
    assert client.command("MAIL FROM:<>")[0] == S250_OK                              # the null sender
    assert client.command("RCPT TO:<>")[0] == S501_SYNTAX
    assert client.command("RCPT TO:<bob>")[0] == S501_SYNTAX
    assert client.command("RCPT TO:<Postmaster>")[0] == S250_OK                       # RFC 5321 4.5.1


def test_unknown_commands_and_too_many_errors_close_the_session(host):
    client = host.connect()
    client.reply()
    for _ in range(8):
        assert client.command("XYZZY")[0] == S500_UNKNOWN
    code, lines = client.command("XYZZY")
    assert code == S421_CLOSING
    assert client.closed()


def test_too_many_recipients(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.command("MAIL FROM:<alice@example.test>")
    for name in ("alice", "bob", "postmaster"):
        assert client.command(f"RCPT TO:<{name}@example.test>")[0] == S250_OK
    code, lines = client.command("RCPT TO:<alice@example.test>")
    assert code == S452_TOO_MANY_RCPTS and "4.5.3" in lines[0]


def test_size_declared_too_big_is_refused_at_mail(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    code, lines = client.command("MAIL FROM:<alice@example.test> SIZE=999999")
    assert code == S552_TOO_BIG and "5.3.4" in lines[0]


def test_message_too_big_is_drained_and_refused(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.command("MAIL FROM:<alice@example.test>")
    client.command("RCPT TO:<bob@example.test>")
    assert client.command("DATA")[0] == S354_START_DATA
    client.send(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 30 + b".\r\n")
    code, lines = client.reply()
    assert code == S552_TOO_BIG and "5.3.4" in lines[0]
    assert client.command("NOOP")[0] == S250_OK          # the data was drained: the session goes on
    assert host.queued() == []


def test_line_too_long_in_a_command(host):
    client = host.connect()
    client.reply()
    code, lines = client.command("EHLO " + "a" * 2000)
    assert code == S500_UNKNOWN and "too long" in lines[0].lower()
    assert client.command("EHLO client.example")[0] == S250_OK


def test_nul_in_a_command_is_refused(host):
    client = host.connect()
    client.reply()
    client.send(b"EHLO client\0.example\r\n")
    assert client.reply()[0] == S500_UNKNOWN
    assert client.command("EHLO client.example")[0] == S250_OK


@pytest.mark.parametrize("path", ['"\x1b]0;x\x07"@client.example', '"a\x7fb"@client.example'])
def test_control_characters_in_a_quoted_address_are_refused_at_mail(host, path):
    """Refused at MAIL, not accepted and set aside later: qtextSMTP has no control characters."""
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    code, lines = client.command(f"MAIL FROM:<{path}>")
    assert code == 501 and "5.1.7" in lines[0]
    code, lines = client.command(f"RCPT TO:<{path}>")
    assert code == 503 or code == 501                  # no transaction, and never a 250


def test_nul_in_data_rejects_the_message(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    client.command("MAIL FROM:<alice@example.test>")
    client.command("RCPT TO:<bob@example.test>")
    client.command("DATA")
    client.send(b"Subject: nul\r\n\r\nbad \0 byte\r\n.\r\n")
    assert client.reply()[0] == S550_REJECTED
    assert host.queued() == []


def test_dot_stuffing_is_undone(host):
    with smtplib.SMTP("127.0.0.1", host.port) as client:
        client.sendmail("alice@example.test", ["bob@example.test"],
                        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n")
    [(_, data)] = host.queued()
    assert data.endswith(b"\n\n.leading dot\n..two\n.\nend\n")


def test_relay_is_denied_to_outsiders(outsider):
    with smtplib.SMTP("127.0.0.1", outsider.port) as client:
        client.ehlo("client.example")
        client.mail("spammer@elsewhere.test")
        code, reply = client.rcpt("victim@elsewhere.test")
        assert code == S554_FAILED and b"5.7.1" in reply
        code, _ = client.rcpt("bob@example.test")                 # local mail is still accepted
        assert code == S250_OK


def test_loopback_may_relay_by_default(host):
    with smtplib.SMTP("127.0.0.1", host.port) as client:
        client.sendmail("alice@example.test", ["someone@elsewhere.test"], MESSAGE)
    [(envelope, _)] = host.queued()
    assert envelope.recipients == ["someone@elsewhere.test"]


def test_auth_lets_an_outsider_relay(outsider):
    with smtplib.SMTP("127.0.0.1", outsider.port) as client:
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong")
        client.login("alice", "alice")
        assert client.sendmail("alice@example.test", ["friend@elsewhere.test"], MESSAGE) == {}
    [(envelope, data)] = outsider.queued()
    assert envelope.auth_user == "alice"
    assert b"with ESMTPA" in data


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms(outsider, mechanism):
    with smtplib.SMTP("127.0.0.1", outsider.port) as client:
        client.ehlo("client.example")
        client.user, client.password = "bob", "bob"
        code, _ = client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()))
        assert code == 235


def test_mail_loop_by_received_count_is_refused(host):
    loop = b"".join(b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n" for _ in range(60))
    with smtplib.SMTP("127.0.0.1", host.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("alice@example.test", ["bob@example.test"], loop + MESSAGE)
    assert info.value.smtp_code == S554_FAILED
    assert host.queued() == []


def test_smtputf8_addresses(host):
    with smtplib.SMTP("127.0.0.1", host.port) as client:
        client.ehlo("client.example")
        client.sendmail("jörg@example.test", ["bob@example.test"], "Subject: grüße\r\n\r\nhallo\r\n".encode(),
                        mail_options=["SMTPUTF8"])
    [(envelope, data)] = host.queued()
    assert envelope.sender == "jörg@example.test"
    assert "with UTF8ESMTP".encode() in data


def test_non_ascii_address_without_smtputf8_is_refused(host):
    client = host.connect()
    client.reply()
    client.command("EHLO client.example")
    assert client.command("MAIL FROM:<jörg@example.test>")[0] == 553


def test_endless_noops_end_the_session(tmp_path):
    host = Instance(tmp_path / "junk", smtp={"max_junk_commands": "5"}).start()
    try:
        client = host.connect()
        client.reply()
        client.command("EHLO client.example")
        for _ in range(5):
            assert client.command("NOOP")[0] == S250_OK
        code, lines = client.command("NOOP")
        assert code == S421_CLOSING and "4.7.0" in lines[0]
        assert client.closed()
    finally:
        host.stop()
