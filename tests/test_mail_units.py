"""Unit tests: the message-list grammar, compose encodings, start-up files, MIME display."""

import email
import email.policy
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailsuite.mail import compose, mime_view, msglist, rc


@dataclass
class M:
    subject: str
    sender: str
    new: bool = False
    read: bool = False
    deleted: bool = False
    flagged: bool = False


@pytest.fixture
def box():
    return [
        M("Lunch on Friday", "Bob <bob@localhost>", read=True),
        M("Invoice 42", "billing@shop.example", new=True),
        M("Re: Lunch on Friday", "Carol <carol@example.org>"),              # old, unread
        M("Spam", "x@spam.example", deleted=True),
        M("Invoice 43", "billing@shop.example", new=True, flagged=True),
    ]


@pytest.mark.parametrize("spec, expected", [
    ("", [3]),
    ("2", [2]),
    ("1-3", [1, 2, 3]),
    ("2-5", [2, 3, 5]),                   # deleted messages are skipped inside ranges
    ("*", [1, 2, 3, 5]),
    ("$", [5]),
    ("^", [1]),
    (".", [3]),
    ("+", [5]),
    ("-", [2]),
    (":n", [2, 5]),
    (":u", [2, 3, 5]),
    (":r", [1]),
    (":o", [3]),
    (":f", [5]),
    (":d", [4]),
    ("/lunch", [1, 3]),
    ("billing", [2, 5]),
    ("CAROL", [3]),
    ("1 /invoice", [1, 2, 5]),
    ("5 1 1", [1, 5]),
    ("'/on Friday'", [1, 3]),
])
def test_select(box, spec, expected):
    assert msglist.select(msglist.split(spec), box, current=3) == expected


@pytest.mark.parametrize("spec, error", [
    ("9", "invalid message number"),
    ("4", "deleted"),
    ("3-1", "invalid range"),
    (":z", "unknown message state"),
    ("/nothing-like-this", "no messages match"),
    ("nobody", "no messages match"),
])
def test_select_errors(box, spec, error):
    with pytest.raises(msglist.MsgListError, match=error):
        msglist.select(msglist.split(spec), box, current=3)


@pytest.mark.parametrize("text, words, rest", [
    ("1 2-3 grep -c x > f", ["1", "2-3"], "grep -c x > f"),
    ("wc -l", [], "wc -l"),
    (":u $ 'lpr -P office'", [":u", "$"], "'lpr -P office'"),
    ("", [], ""),
])
def test_leading_list(text, words, rest):
    assert msglist.leading_list(text) == (words, rest)


def test_select_deleted_for_undelete(box):
    assert msglist.select(["4"], box, current=3, deleted=True) == [4]
    assert msglist.select(["*"], box, current=3, deleted=True) == [4]
    with pytest.raises(msglist.MsgListError):
        msglist.select(["2"], box, current=3, deleted=True)


def test_current_deleted_means_no_default(box):
    with pytest.raises(msglist.MsgListError):
        msglist.select([], box, current=4)


# --- compose ---

def build(**fields):
    draft = compose.Draft(to=["bob@localhost"], **fields)
    raw = compose.build(draft, message_id_domain="mail.example",
                        date=datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc))
    return raw, email.message_from_bytes(raw, policy=email.policy.default)


def test_ascii_is_7bit():
    raw, msg = build(subject="Hello", body="plain text")
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert raw.endswith(b"\n\nplain text\n")
    assert msg["Date"] == "Tue, 24 Nov 2026 07:00:00 +0000"
    assert msg["Message-ID"].endswith("@mail.example>")


def test_non_ascii_subject_is_rfc2047_and_round_trips():
    raw, msg = build(subject="Ünïcödé – 日本語 subject that is long enough to need folding, surely", body="x")
    header = raw.split(b"\n\n", 1)[0]
    assert header.isascii()
    assert b"=?utf-8?" in header
    assert all(len(line) <= 78 for line in header.split(b"\n"))
    assert msg["Subject"] == "Ünïcödé – 日本語 subject that is long enough to need folding, surely"


def test_mostly_ascii_body_is_quoted_printable_mostly_foreign_is_base64():
    _, latin = build(subject="x", body="Grüße aus Köln, bis bald.\n")
    assert latin["Content-Transfer-Encoding"] == "quoted-printable"
    assert latin.get_content() == "Grüße aus Köln, bis bald.\n"
    _, russian = build(subject="x", body="Привет, как дела?\n")
    assert russian["Content-Transfer-Encoding"] == "base64"
    assert russian.get_content() == "Привет, как дела?\n"


def test_long_ascii_lines_are_quoted_printable():
    _, msg = build(subject="x", body="a" * 1200 + "\n")
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == "a" * 1200 + "\n"


def test_recipients_and_address_splitting():
    assert compose.split_addresses('a@b, "Doe, J" <j@d>,  , c@d') == ["a@b", '"Doe, J" <j@d>', "c@d"]
    draft = compose.Draft(to=["A <a@x>", "b@x"], cc=["a@x"], bcc=["c@x"])
    assert draft.recipients() == ["a@x", "b@x", "c@x"]


def test_unknown_extension_is_octet_stream(tmp_path):
    (tmp_path / "archive.tar.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    _, msg = build(subject="x", body="see", attachments=[str(tmp_path / "archive.tar.gz")])
    [part] = msg.iter_attachments()
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_payload(decode=True) == b"\x1f\x8b" + bytes(100)


# --- start-up files ---

def test_rc_file(tmp_path):
    path = tmp_path / "mailrc"
    path.write_text(
        "# comment\n"
        "set hold crt=20 folder=Mail\n"
        "set noquote\n"
        "alias team bob carol\n"
        "alias all team dave\n"
        "ignore Received Message-ID\n"
        "if s\n  set record=+sent\nelse\n  set recv\nendif\n"
        "bogus command\n")
    warnings = []
    options = rc.Options()
    rc.load(options, str(path), sending=False, warn=warnings.append)
    assert options.on("hold") and options.number("crt", 0) == 20 and options.get("folder") == "Mail"
    assert not options.on("quote")
    assert options.on("recv") and not options.on("record")
    assert options.expand(["all", "erin"]) == ["bob", "carol", "dave", "erin"]
    assert not options.shows_header("received") and options.shows_header("Subject")
    options.retain(["subject"])
    assert options.shows_header("Subject") and not options.shows_header("From")
    assert len(warnings) == 1 and "bogus" in warnings[0]


def test_alias_loops_terminate():
    options = rc.Options()
    options.alias(["a", "b"])
    options.alias(["b", "a", "x@y"])
    assert options.expand(["a"]) == ["a", "x@y"]


# --- display ---

MULTIPART = (
    b"From: =?iso-8859-1?q?J=F6rg?= <j@x>\nSubject: =?utf-8?b?w5xiZXI=?=\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\n"
    b"Content-Type: multipart/alternative; boundary=YY\n\n--YY\n"
    b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"Gr=FC=DFe\n--YY\nContent-Type: text/html\n\n<p>Gr&uuml;&szlig;e</p>\n--YY--\n"
    b"--XX\nContent-Type: application/pdf; name=report.pdf\nContent-Disposition: attachment; filename=report.pdf\n"
    b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--XX--\n")


def test_render_decodes_text_and_lists_attachments():
    text = mime_view.render(MULTIPART, lambda name: name.lower() in ("from", "subject"))
    assert "From: Jörg <j@x>" in text and "Subject: Über" in text
    assert "Grüße" in text and "<p>" not in text
    assert "text/html" not in text                     # the other version of the same text is no attachment
    assert "[-- Attachment #1: application/pdf, 9 bytes, report.pdf --]" in text
    parts = mime_view.attachments(mime_view.parse(MULTIPART))
    assert [p.content_type for p in parts] == ["application/pdf"]
    assert parts[0].message.get_payload(decode=True) == b"%PDF-1.4\n"


def test_undeclared_8bit_and_bad_charset_never_raise():
    raw = b"Subject: x\nContent-Type: text/plain; charset=no-such-charset\n\n\xe9t\xe9\n"
    assert "été" in mime_view.render(raw, lambda n: True)


def test_terminal_output_defuses_control_characters():
    text = "Subject: \x1b]0;owned\x07 hi\rX\x9b2J\nbody\twith tab\n"
    assert mime_view.for_terminal(text).decode() == "Subject: ?]0;owned? hi?X?2J\nbody\twith tab\n"


@pytest.mark.parametrize("raw, text", [
    ("plain  words\n folded", "plain words folded"),
    ("test 1 =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "test 1 Grüße"),
    ("=?iso-8859-1?q?J=F6rg?= <j@x>", "Jörg <j@x>"),
    ("=?bogus-charset?q?abc?=", "abc"),
    ("=?UTF-8?B?!!!?=", "[Invalid Base64 encoding]"),
    ("=?utf-8?q?a?= =?utf-8?q?b?= c", "ab c"),                   # space between encoded words is dropped
])
def test_decode_header(raw, text):
    assert mime_view.decode_header(raw) == text


def test_raw_utf8_and_latin1_headers():
    msg = mime_view.parse("Subject: Grüße aus Köln\n\nx\n".encode())
    assert mime_view.decode_header(msg["Subject"]) == "Grüße aus Köln"
    msg = mime_view.parse("Subject: Grüße\n\nx\n".encode("latin-1"))
    assert mime_view.decode_header(msg["Subject"]) == "Grüße"


# --- the command table ---

@pytest.mark.parametrize("word, name", [
    ("p", "print"), ("t", "type"), ("P", "Print"), ("n", "next"), ("h", "headers"), ("z", "z"),
    ("f", "from"), ("to", "top"), ("d", "delete"), ("dp", "dp"), ("u", "undelete"), ("r", "reply"),
    ("R", "Reply"), ("m", "mail"), ("s", "save"), ("S", "Save"), ("w", "write"), ("c", "copy"),
    ("pre", "preserve"), ("mb", "mbox"), ("ho", "hold"), ("q", "quit"), ("x", "xit"), ("ex", "exit"),
    ("e", "edit"), ("a", "alias"), ("se", "set"), ("uns", "unset"), ("ig", "ignore"), ("ret", "retain"),
    ("fo", "folder"), ("det", "detach"), ("at", "attachments"), ("=", "="), ("?", "?"), ("!", "!"),
])
def test_command_abbreviations(word, name):
    from mailsuite.mail.commands import table as commands
    assert commands.lookup(word).name == name


@pytest.mark.parametrize("line, split", [
    ("p 1-3", ("p", "1-3")), ("!ls -l", ("!", "ls -l")), ("| 2 wc", ("|", "2 wc")),
    ("3", ("print", "3")), ("/invoice", ("print", "/invoice")), ("z-", ("z", "-")), ("=", ("=", "")),
    ("dp", ("dp", "")), ("s2 file", ("s", "2 file")),
])
def test_split_command(line, split):
    from mailsuite.mail.commands import table as commands
    assert commands.split_command(line) == split


# --- nothing a sender writes makes the reader raise ---

HEADERISH = st.lists(st.sampled_from([
    b"Subject: ", b"From: ", b"=?utf-8?q?", b"=?bogus?b?", b"?=", b"\xff\xfe", b"\x00", b"\n", b"\n\n",
    b"Content-Type: multipart/mixed; boundary=B\n", b"Content-Type: text/plain; charset=koi8-r\n",
    b"--B\n", b"--B--\n", b"Content-Transfer-Encoding: base64\n", b"Content-Transfer-Encoding: quoted-printable\n",
    b"=E9=", b"QUJD", b"\x1b[2J", b"Content-Disposition: attachment; filename*=utf-8''%E9\n", b"x" * 100,
]), max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(HEADERISH)
@example(b"Subject: =?bogus?b?\xff\xfe?=")          # 8-bit bytes inside encoded words
@example(b"Subject: =?utf-8?q?\xff\xfe?=")
def test_render_never_raises(raw):
    text = mime_view.render(raw, lambda name: True)
    assert isinstance(text, str)
    mime_view.body_text(raw)
    mime_view.for_terminal(text)
    for part in mime_view.attachments(mime_view.parse(raw)):
        assert part.size >= 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789-*$.^+:nourdfz/ab", min_size=1, max_size=6), max_size=4))
def test_select_raises_only_its_own_error(words):
    box = [M("a", "b@x", read=True), M("b", "a@x", new=True), M("ab", "c@x", deleted=True)]
    try:
        chosen = msglist.select(words, box, current=1)
    except msglist.MsgListError:
        return
    assert chosen == sorted(set(chosen)) and all(1 <= n <= 3 for n in chosen)


def test_example_mail_rc_loads_cleanly():
    from conftest import REPO
    warnings = []
    options = rc.Options()
    rc.load(options, str(REPO / "etc" / "mail.rc"), sending=False, warn=warnings.append)
    assert warnings == []
    assert options.on("crt") and options.get("indentprefix") == "> "
    assert not options.shows_header("Received") and options.shows_header("Subject")


@pytest.mark.parametrize("text, columns, expected", [
    ("abc", 5, "abc  "),
    ("abcdef", 4, "abcd"),
    ("日本語です", 5, "日本 "),            # two columns each: the third would not fit
    ("Jörg", 4, "Jörg"),
    ("e\u0301te\u0301", 3, "e\u0301te\u0301"),  # combining accents take no column
])
def test_fit_counts_terminal_columns(text, columns, expected):
    from mailsuite.mail import summary
    assert summary.fit(text, columns) == expected


@pytest.mark.parametrize("levels", [40, 2000])
def test_deeply_nested_messages_are_shown_never_recursed_forever(levels):
    raw = b"Subject: deep\nContent-Type: message/rfc822\n\n" * levels + b"Subject: core\n\ntext\n"
    text = mime_view.render(raw, lambda n: True)
    assert text.startswith("Subject: deep\n")
    assert "[-- Attachment #1: message/rfc822" in text                  # what lies too deep is listed


def test_a_text_attachment_says_its_charset(tmp_path):
    from email.message import EmailMessage

    from mailsuite.mail.compose import attach_file
    for name, data, expected in (("utf8.txt", "München\n".encode(), 'text/plain; charset="utf-8"'),
                                 ("ascii.txt", b"plain\n", 'text/plain; charset="us-ascii"'),
                                 ("latin1.txt", "M\xfcnchen\n".encode("latin-1"), "application/octet-stream")):
        (tmp_path / name).write_bytes(data)
        msg = EmailMessage()
        msg.set_content("body")
        attach_file(msg, tmp_path / name)
        part = list(msg.iter_attachments())[0]
        assert part["Content-Type"] == expected, name
        assert part.get_payload(decode=True) == data


@pytest.mark.parametrize("address, ok", [("bob@@localhost", False), ("bob@localhost", True), ("bob", True),
                                         ('"Doe, J" <j@d.example>', True), ("a..b@c", False), ("<@x>", False)])
def test_recipients_must_be_addresses(address, ok):
    from mailsuite.mail import compose
    draft = compose.Draft(to=[address])
    if ok:
        compose.check(draft)
    else:
        with pytest.raises(compose.DraftError, match="is not a mail address"):
            compose.check(draft)
