"""The command grammar, bit by bit, and a fuzz: garbage only ever gives ParseError."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.core import mutf7
from mailsuite.imap import parser
from mailsuite.imap.mailboxes import pattern_regex
from mailsuite.imap.parser import BadCharset, ParseError, Section, SequenceSet, parse_command
from mailsuite.imap.response import Run, serialise, to_bytes


def args(line):
    return parse_command(line).args


def test_atoms_quoted_and_literals():
    assert args(b'a LOGIN alice "pass word"') == ("alice", "pass word")
    assert args(b'a LOGIN "al\\"ice" {4}\r\nx\r\ny') == ('al"ice', "x\r\ny")
    assert args(b"a LOGIN {5+}\r\nalice pw") == ("alice", "pw")
    assert args(b"a SELECT inbox") == ("INBOX",)
    assert args(b'a LIST "" "%/x"') == ("", "%/x")
    assert args(b"a LIST ~ *") == ("~", "*")


def test_sequence_sets():
    seq = args(b"a FETCH 1:3,7,9:*,* FLAGS")[0]
    assert seq == SequenceSet(((1, 3), (7, 7), (9, None), (None, None)))
    assert list(seq.resolve(10)) == [(1, 3), (7, 7), (9, 10), (10, 10)]
    assert list(SequenceSet(((5, 2),)).resolve(9)) == [(2, 5)]
    assert str(seq) == "1:3,7,9:*,*"
    for bad in (b"0", b"1:", b",1", b"1,,2", b"x", b"4294967296", b"1:*:2"):
        with pytest.raises(ParseError):
            parse_command(b"a FETCH " + bad + b" FLAGS")


def test_fetch_attributes():
    seq, atts = args(b"a FETCH 1 (UID BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A \"X B\")]<10.20> BODY[] RFC822.SIZE)")
    assert atts[1] == parser.FetchAtt("BODY[]", Section((1, 2), "HEADER.FIELDS.NOT", ("X-A", "X B")), (10, 20), True)
    assert atts[1].response_name() == 'BODY[1.2.HEADER.FIELDS.NOT (X-A "X B")]<10>'
    assert not atts[1].sets_seen and atts[2].sets_seen
    assert [a.name for a in args(b"a FETCH 1 FULL")[1]] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    assert args(b"a FETCH 1 body[3.mime]")[1][0].section == Section((3,), "MIME")
    for bad in (b"a FETCH 1 (ALL)", b"a FETCH 1 BODY[MIME]", b"a FETCH 1 BODY.PEEK", b"a FETCH 1 BODY[1.]",
                b"a FETCH 1 BODY[]<1.0>", b"a FETCH 1 BODY[HEADER.FIELDS ()]", b"a FETCH 1 (FLAGS UID"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_search_keys():
    charset, key = args(b'a SEARCH CHARSET UTF-8 OR (FROM "x y" SINCE 1-Feb-2024) NOT 2:4 HEADER X-Spam ""')
    assert charset == "UTF-8"
    assert key == ("AND", (
        ("OR", ("AND", (("FROM", "x y"), ("SINCE", datetime.date(2024, 2, 1)))), ("NOT", ("SEQUENCE", SequenceSet(((2, 4),))))),
        ("HEADER", "X-Spam", ""),
    ))
    assert args(b"a UID SEARCH UID 5:* UNKEYWORD $Junk LARGER 100") is not None
    with pytest.raises(BadCharset):
        parse_command(b"a SEARCH CHARSET BIG5 ALL")
    with pytest.raises(ParseError):
        parse_command(b"a SEARCH FROBNICATE")


def test_store_append_status_id():
    seq, store = args(b"a STORE 1:2 -FLAGS.SILENT (\\seen $Label)")
    assert (store.mode, store.silent, store.flags) == ("-", True, ("\\Seen", "$Label"))
    assert args(b"a STORE 1 FLAGS \\Deleted \\Draft")[1].flags == ("\\Deleted", "\\Draft")
    append = args(b'a APPEND Sent (\\Seen) " 1-Feb-2024 10:00:00 +0100" {2}\r\nhi')[0]
    assert append.message == b"hi" and append.date.utcoffset() == datetime.timedelta(hours=1)
    assert args(b"a STATUS INBOX (MESSAGES UIDNEXT)") == ("INBOX", ("MESSAGES", "UIDNEXT"))
    assert args(b'a ID ("name" "x" "version" NIL)') == ({"name": "x", "version": None},)
    assert args(b"a ID NIL") == (None,)
    assert parse_command(b"a UID EXPUNGE 3:5").name == "UID EXPUNGE"


def test_errors_carry_the_tag():
    with pytest.raises(ParseError) as info:
        parse_command(b"t42 FETCH")
    assert info.value.tag == "t42"
    with pytest.raises(ParseError) as info:
        parse_command(b"+bad NOOP")
    assert info.value.tag is None


def test_modified_utf7():
    for text in ("Entwürfe", "日本語", "a&b", "Été/Brouillons", "plain"):
        assert mutf7.decode(mutf7.encode(text)) == text
    assert mutf7.encode("Entwürfe") == "Entw&APw-rfe"
    for bad in ("&", "&Jjo", "&AGE-", "caf\u00e9"):
        with pytest.raises(ValueError):
            mutf7.decode(bad)
        assert mutf7.for_display(bad) == bad             # what a client shows of a name it cannot decode
    assert mutf7.for_display("Entw&APw-rfe") == "Entwürfe"


def test_list_wildcards():
    assert pattern_regex("a/%").fullmatch("a/b") and not pattern_regex("a/%").fullmatch("a/b/c")
    assert pattern_regex("a*").fullmatch("a/b/c")


def test_response_serialisation():
    assert to_bytes(serialise(["A", 1, None, b'q"x', b"8\xffbit", Run(([b"a"], [b"b"]))])) == \
        b'(A 1 NIL "q\\"x" {5}\r\n8\xffbit ("a")("b"))'


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes_the_parser(data):
    try:
        parse_command(b"a " + data)
    except (ParseError, BadCharset):
        pass


_TOKENS = [b"FETCH", b"UID", b"SEARCH", b"STORE", b"(", b")", b"[", b"]", b"<", b">", b" ", b"1", b"*", b":", b",",
           b"{3}\r\n", b'"', b"\\", b"BODY", b"BODY.PEEK", b"HEADER.FIELDS", b"+FLAGS", b"OR", b"NOT", b"0", b"."]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=30))
def test_token_soup_never_crashes_the_parser(tokens):
    try:
        parse_command(b"a " + b"".join(tokens))
    except (ParseError, BadCharset):
        pass


def test_grammar_and_command_table_agree():
    from mailsuite.imap.session import COMMANDS
    grammar = set(parser.ARGUMENTS) | {"UID " + name for name in parser.UID_ARGUMENTS}
    assert grammar == set(COMMANDS)
