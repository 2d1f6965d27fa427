"""Hostile and broken input: every error gets a clear reply and the session lives on."""

import pytest
from imap_support import deliver, raw_session

MESSAGE = b"From: a@example.org\nSubject: one\n\nbody\n"


@pytest.fixture
def box(sandbox):
    deliver(sandbox, "alice", MESSAGE)
    deliver(sandbox, "alice", MESSAGE)
    return sandbox


def replies(box, *lines, preauth=True, select=True):
    script = b"".join(line + b"\r\n" for line in ((b"s SELECT INBOX",) if select else ()) + lines + (b"z LOGOUT",))
    out, status = raw_session(box, script, preauth=preauth)
    assert status == 0
    return out


def tagged(out, tag):
    for line in out.split(b"\r\n"):
        if line.startswith(tag + b" "):
            return line
    raise AssertionError(f"no reply tagged {tag!r} in {out!r}")


@pytest.mark.parametrize("line", [
    b"a FETCH 1 (FLAGS",
    b"a FETCH 1 FLAGS)",
    b"a FETCH 1 (FLAGS))",
    b"a FETCH 1 ((FLAGS)",
    b"a SEARCH (FROM x",
    b"a SEARCH OR FROM x",
    b"a STORE 1 +FLAGS (\\Seen",
    b"a STATUS INBOX (MESSAGES",
    b"a FETCH 1 BODY[1.HEADER.FIELDS (FROM]",
    b"a FETCH 1 BODY[TEXT]<5>",
    b"a FETCH 1 BODY[TEXT]<5.0>",
    b"a FETCH 1 BODY[SUBJECT]",
    b"a FETCH 1 BOGUS",
    b"a LIST \"\"",
    b"a SELECT",
    b"a NOOP extra",
    b"a FROBNICATE",
    b'a SEARCH SUBJECT "unterminated',
    b'a SEARCH SUBJECT "bad \\x escape"',
    b"a SEARCH BEFORE 31-Foo-2020",
    b"a SEARCH BEFORE 31-Feb-2020",
    b"a STORE 1 FLAGS (\\Recent)",
    b"a STORE 1 FLAGS (\\Bogus)",
    b"a STORE 1 XFLAGS (\\Seen)",
    b"a APPEND INBOX (\\Seen) \"bad date\" {1+}\r\nx",
    b"a UID FROB 1",
])
def test_syntax_errors_get_bad(box, line):
    out = replies(box, line)
    assert tagged(out, b"a").startswith(b"a BAD "), out
    assert tagged(out, b"z") == b"z OK LOGOUT completed"


@pytest.mark.parametrize("sequence", [b"0", b"1:", b":1", b"a", b"1,,2", b"4294967296", b"1:0", b"-1", b"1.5", b"*:"])
def test_bad_sequence_sets(box, sequence):
    out = replies(box, b"a FETCH " + sequence + b" FLAGS", b"b UID FETCH " + sequence + b" FLAGS")
    assert tagged(out, b"a").startswith(b"a BAD"), out
    assert tagged(out, b"b").startswith(b"b BAD"), out


def test_out_of_range_numbers(box):
    out = replies(box, b"a FETCH 3 FLAGS", b"b UID FETCH 99 FLAGS", b"c FETCH 1:* FLAGS", b"d UID FETCH 99:* FLAGS")
    assert tagged(out, b"a").startswith(b"a BAD")
    assert tagged(out, b"b") == b"b OK UID FETCH completed"
    assert tagged(out, b"c") == b"c OK FETCH completed"
    assert b"* 2 FETCH (UID 2 FLAGS" in out  # "99:*" includes the largest UID (RFC 3501 6.4.8)


def test_wrong_state(box):
    out = replies(box, b"a SELECT INBOX", b"b FETCH 1 FLAGS", b"c CLOSE", b"d LOGIN alice alice", preauth=False,
                  select=False)
    assert tagged(out, b"a").startswith(b"a BAD SELECT not allowed in the not authenticated state")
    assert tagged(out, b"b").startswith(b"b BAD")
    assert tagged(out, b"c").startswith(b"c BAD")
    assert tagged(out, b"d").startswith(b"d OK")
    out = replies(box, b"a FETCH 1 FLAGS", b"b LOGIN alice alice", b"c EXPUNGE", select=False)
    assert tagged(out, b"a").startswith(b"a BAD FETCH not allowed in the authenticated state")
    assert tagged(out, b"b").startswith(b"b BAD")
    assert tagged(out, b"c").startswith(b"c BAD")


def test_eight_bit_and_nul(box):
    out = replies(box, b"a SELECT INB\xffOX", b"b FETCH 1 (FLAGS\x00)", b"c CREATE \"caf\xc3\xa9\"", b"d \xff NOOP")
    assert tagged(out, b"a").startswith(b"a BAD 8-bit")
    assert tagged(out, b"b").startswith(b"b BAD")
    assert tagged(out, b"c").startswith(b"c NO")  # names travel in modified UTF-7
    assert tagged(out, b"d").startswith(b"d BAD 8-bit")


def test_huge_and_negative_literals(box):
    out = replies(box, b"a LOGIN {99999999999}", b"b SELECT {-5}", b"c APPEND INBOX {999999999999}")
    assert tagged(out, b"a").startswith(b"a NO [TOOBIG]")
    assert tagged(out, b"b").startswith(b"b BAD")
    assert tagged(out, b"c").startswith(b"c NO [TOOBIG]")
    assert b"+ Ready" not in out
    out, _ = raw_session(box, b"a SELECT {99999999999+}\r\nINBOX\r\nz LOGOUT\r\n")
    assert b"* BYE literal too large" in out and b"z OK" not in out


def test_very_long_lines(box):
    long_line = b"a FETCH 1 (" + b"FLAGS " * 20000 + b"UID)"
    out = replies(box, long_line, b"b NOOP")
    assert b"* BAD line too long" in out  # the line, tag included, was never buffered
    assert tagged(out, b"b") == b"b OK NOOP completed"


def test_literal_cut_short_by_eof(box):
    out, status = raw_session(box, b"a LOGIN {10}\r\nabc")
    assert status == 0 and b"+ Ready" in out


def test_endless_garbage_is_disconnected(box):
    out, status = raw_session(box, b"garbage\r\n" * 100)
    assert status == 0
    assert out.count(b"BAD") == 20 and b"* BYE too many invalid commands" in out


def test_deep_search_nesting(box):
    out = replies(box, b"a SEARCH " + b"(" * 200 + b"ALL" + b")" * 200, b"b SEARCH " + b"NOT " * 200 + b"ALL")
    assert tagged(out, b"a").startswith(b"a BAD search keys nested too deeply")
    assert tagged(out, b"b").startswith(b"b BAD search keys nested too deeply")


def test_bad_charset(box):
    out = replies(box, b"a SEARCH CHARSET X-MARTIAN ALL")
    assert tagged(out, b"a").startswith(b"a NO [BADCHARSET")


def test_a_mail_dir_that_leads_into_the_spool_directory_is_refused(box):
    """~/mail -> the spool directory: the folders would be other users' spools (issue 10, item 4).

    In the sandbox every user is one uid, so only this check stands between alice and bob's spool."""
    folders = box.home("alice") / "mail"
    folders.rmdir()                                    # the sandbox made it empty
    folders.symlink_to(box.dir / "spool")
    bob = box.spool("bob").read_bytes()
    out = replies(box, b"l LIST \"\" *", b"r RENAME bob bob-stolen", b"c CREATE planted", b"d DELETE bob",
                  b"a APPEND bob {1}", b"x", select=False)
    assert b'* LIST (\\HasNoChildren) "/" INBOX' in out and b"bob" not in out.split(b"r RENAME")[0]
    for tag in (b"r", b"c", b"d"):
        assert tagged(out, tag).startswith(tag + b" NO")
    assert sorted(p.name for p in (box.dir / "spool").iterdir() if not p.name.startswith(".")) == ["alice", "bob"]  # no crash records
    assert box.spool("bob").read_bytes() == bob
