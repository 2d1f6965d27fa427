"""mail.local -l: exactly one reply per accepted RCPT after DATA (RFC 2033 4.2), whatever happens.

A client counts the replies: one per recipient it got 250 for.  A message
too big, or one that cannot be prepared for delivery, used to get a single
multi-line reply, and the client waited for ever for the others.  Tested
with Python's smtplib.LMTP and a raw socket, over a unix socket whose
connection is mail.local's stdin and stdout (as an LMTP listener runs it).
"""

import socket

import pytest
from mta_helpers import set_config

S250_OK = 250
S354_START = 354
S552_TOO_BIG = 552


@pytest.fixture
def lmtp(sandbox, lmtp_socket):
    """mail.local -l on a unix socket, with a small size limit."""
    set_config(sandbox, "delivery", "max_message_size", "2000")
    return lmtp_socket


def test_too_big_gets_one_reply_per_recipient_through_smtplib(lmtp):
    import smtplib
    client = smtplib.LMTP(lmtp, timeout=10)
    try:
        client.ehlo_or_helo_if_needed()
        client.mail("bob@example.org")
        for rcpt in ("alice@localhost", "bob@localhost"):
            assert client.rcpt(rcpt)[0] == S250_OK
        code, text = client.data(b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
        assert code == S552_TOO_BIG and b"alice@localhost" in text
        code, text = client.getreply()                 # the second recipient's own reply
        assert code == S552_TOO_BIG and b"bob@localhost" in text
        assert client.noop()[0] == S250_OK             # and nothing else is pending
    finally:
        client.close()


class Raw:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def line(self):
        return self.file.readline().rstrip(b"\r\n")

    def send(self, *lines):
        self.sock.sendall(b"".join(line + b"\r\n" for line in lines))

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.mark.parametrize("body, code", [
    ([b"Subject: big", b"", b"x" * 3000], b"552"),          # too big
    ([], b"554"),                                            # empty: nothing to prepare
    ([b"Subject: fine", b"", b"hello"], b"250"),
])
def test_one_reply_line_per_accepted_recipient_on_a_raw_socket(lmtp, body, code):
    client = Raw(lmtp)
    try:
        assert client.line().startswith(b"220 ")
        client.send(b"LHLO client.example")
        while client.line().startswith(b"250-"):
            pass
        client.send(b"MAIL FROM:<bob@example.org>", b"RCPT TO:<alice@localhost>", b"RCPT TO:<ghost@localhost>",
                    b"RCPT TO:<bob@localhost>", b"DATA")
        assert [client.line()[:3] for _ in range(5)] == [b"250", b"250", b"550", b"250", b"354"]
        client.send(*body, b".", b"NOOP")
        replies = [client.line() for _ in range(3)]
        assert [r[:4] for r in replies] == [code + b" "] * 2 + [b"250 "]      # two recipients, then NOOP
        assert b"alice@localhost" in replies[0] and b"bob@localhost" in replies[1]
    finally:
        client.close()
