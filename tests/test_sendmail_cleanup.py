"""Cleanup on pickup: what is added, what is kept byte for byte, what is removed."""

import io

from mta_helpers import spool_messages

from mailsuite.core.headers import read_header


def submit(sandbox, data, *args):
    result = sandbox.run("sendmail", "-odi", "-i", *args, input=data)
    assert result.returncode == 0, result.stderr
    return result


def test_existing_fields_are_kept_not_duplicated(sandbox):
    data = (b"From: Someone <someone@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
            b"Message-ID: <keep@example.org>\nX-Odd:  spacing\tkept\n\tfolded\nSubject: s\n\nbody\n")
    submit(sandbox, data, "alice")
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg.get_all("From") == ["Someone <someone@example.org>"]
    assert msg.get_all("Message-ID") == ["<keep@example.org>"]
    assert msg.get_all("Date") == ["Mon, 1 Jan 2024 00:00:00 +0000"]
    assert b"X-Odd:  spacing\tkept\n\tfolded\n" in sandbox.spool("alice").read_bytes()
    assert len(msg.get_all("Received")) == 1


def test_resent_fields_take_precedence_for_t(sandbox):
    data = (b"To: alice@localhost\nResent-To: bob@localhost\nResent-Bcc: alice@localhost\n"
            b"Subject: forwarded\n\nbody\n")
    submit(sandbox, data, "-t")
    [msg] = spool_messages(sandbox.spool("bob"))
    assert msg["Resent-Bcc"] is None
    assert len(spool_messages(sandbox.spool("alice"))) == 1     # via Resent-Bcc, not To


def test_message_without_header_gets_one(sandbox):
    submit(sandbox, b"just a line of text\nand another\n", "alice")
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg["From"] and msg["Date"] and msg["Message-ID"]
    assert msg.get_payload() == "just a line of text\nand another\n"


def test_empty_input_still_makes_a_message(sandbox):
    submit(sandbox, b"", "alice")
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg["Message-ID"]


def test_read_header_stops_at_the_body():
    f = io.BytesIO(b"A: 1\r\nB: 2\r\n continued\r\n\r\nbody\r\n")
    header, leftover = read_header(f)
    assert [n for n, _raw in header.fields] == ["A", "B"]
    assert header.get_all("b") == ["2 continued"]
    assert leftover == b""
    assert f.read() == b"body\r\n"


def test_read_header_without_blank_line():
    header, leftover = read_header(io.BytesIO(b"A: 1\nnot a header\nmore\n"))
    assert header.get_all("A") == ["1"]
    assert leftover == b"\nnot a header\n"


def test_read_header_keeps_long_lines_whole_and_bounds_folded_ones():
    long_line = b"X-Long: " + b"a" * 200_000 + b"\n"
    header, leftover = read_header(io.BytesIO(long_line + b"Subject: s\n\nbody\n"))
    assert [raw for _n, raw in header.fields] == [long_line, b"Subject: s\n"] and leftover == b""
    endless = io.BytesIO(b"X-Fold: start\n" + b" more\n" * 100_000 + b"\nbody\n")
    header, leftover = read_header(endless, limit=4096)
    assert len(header.to_bytes()) <= 4096 and leftover == b"\n more\n"
    assert endless.read().startswith(b" more\n")


def test_a_submitted_header_line_of_200k_arrives_whole(sandbox):
    recipients = ", ".join(f"user{i}@example.org" for i in range(10_000))     # one unfolded To: line
    submit(sandbox, f"To: {recipients}\nSubject: many\n\nbody\n".encode(), "alice")
    [msg] = spool_messages(sandbox.spool("alice"))
    assert msg["Subject"] == "many" and msg["To"].count("@example.org") == 10_000
    assert msg.get_payload() == "body\n"
