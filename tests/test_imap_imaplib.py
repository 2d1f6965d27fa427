"""imapd driven by Python's imaplib: every command and its response forms."""

import imaplib
import re

import pytest
from imap_support import deliver, imapd, raw_session, set_imap_option

SIMPLE = b"From: Alice <alice@example.org>\nTo: bob@example.org\nSubject: hello\nDate: Mon, 2 Jan 2023 10:00:00 +0000\nMessage-ID: <1@example.org>\n\nfirst body line\nFrom the start\n"
MIME = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\nTo: alice@localhost\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nDate: Tue, 3 Jan 2023 11:00:00 +0100\n"
    b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n"
    b"preamble\n--XYZ\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"sch=C3=B6ne Gr=C3=BC=C3=9Fe\n--XYZ\nContent-Type: application/pdf; name=\"a.pdf\"\n"
    b"Content-Disposition: attachment; filename=\"a.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--XYZ--\n"
)


@pytest.fixture
def box(sandbox):
    deliver(sandbox, "alice", SIMPLE)
    deliver(sandbox, "alice", MIME)
    deliver(sandbox, "alice", SIMPLE.replace(b"hello", b"third"))
    return sandbox


def session(sandbox, **kw):
    imap = imapd(sandbox, **kw)
    return imap


def test_capability_and_noop_and_logout(box):
    imap = session(box)
    typ, caps = imap.capability()
    assert typ == "OK"
    words = caps[0].split()
    for cap in (b"IMAP4rev1", b"IDLE", b"UIDPLUS", b"NAMESPACE", b"ID", b"UNSELECT", b"MOVE", b"CHILDREN", b"LITERAL+"):
        assert cap in words
    assert imap.noop()[0] == "OK"
    assert imap.logout()[0] == "BYE"


def test_login_in_inetd_mode(box):
    imap = session(box, preauth=False)
    assert "AUTH=PLAIN" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        imap.select("INBOX")  # not allowed before login
    assert imap.login("alice", "alice")[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"3"])
    imap.logout()


def test_authenticate_plain(box):
    imap = session(box, preauth=False)
    typ, _ = imap.authenticate("PLAIN", lambda _: b"\0alice\0alice")
    assert typ == "OK"
    assert imap.select("INBOX")[0] == "OK"
    imap.logout()


def test_select_examine_responses(box):
    imap = session(box)
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"3"])
    assert imap.untagged_responses["RECENT"] == [b"3"]
    assert imap.untagged_responses["UIDVALIDITY"][0].isdigit()
    assert imap.untagged_responses["UIDNEXT"] == [b"4"]
    assert imap.untagged_responses["UNSEEN"] == [b"1"]
    imap.close()
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK"
    assert imap.untagged_responses.get("RECENT") == [b"0"]  # the first SELECT took \Recent
    imap.logout()


def test_fetch_forms(box):
    imap = session(box)
    imap.select("INBOX")
    typ, data = imap.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
    assert typ == "OK"
    text = data[0]
    assert b'"hello"' in text and b'(("Alice" NIL "alice" "example.org"))' in text
    size = int(re.search(rb"RFC822.SIZE (\d+)", text).group(1))
    typ, data = imap.fetch("1", "(BODY.PEEK[])")
    assert len(data[0][1]) == size
    assert data[0][1].count(b"\r\n") == data[0][1].count(b"\n")
    assert b"X-UID" not in data[0][1] and b"Status:" not in data[0][1]
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert data[0][1] == b"From: Alice <alice@example.org>\r\nSubject: hello\r\n\r\n"
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])")
    assert b"Subject" not in data[0][1] and b"Message-ID" in data[0][1]
    typ, data = imap.fetch("1", "(BODY.PEEK[TEXT]<0.5>)")
    assert data[0][0].endswith(b"BODY[TEXT]<0> {5}") and data[0][1] == b"first"
    typ, data = imap.fetch("2", "(BODYSTRUCTURE)")
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable"' in data[0]
    assert b'("attachment" ("filename" "a.pdf"))' in data[0] and b'"mixed" ("boundary" "XYZ")' in data[0]
    typ, data = imap.fetch("2", "(BODY)")
    assert b"attachment" not in data[0]
    typ, data = imap.fetch("2", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[2])")
    parts = {d[0].split()[-2].lstrip(b"("): d[1] for d in data if isinstance(d, tuple)}
    assert parts[b"BODY[1]"] == b"sch=C3=B6ne Gr=C3=BC=C3=9Fe"
    assert parts[b"BODY[2]"] == b"JVBERi0xLjQK"
    assert parts[b"BODY[2.MIME]"].startswith(b"Content-Type: application/pdf")
    typ, data = imap.fetch("1:*", "FAST")
    assert len(data) == 3
    typ, data = imap.fetch("3", "(RFC822.HEADER RFC822.TEXT)")
    assert typ == "OK"
    typ, data = imap.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]
    imap.fetch("1", "(BODY[TEXT])")
    typ, data = imap.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
    assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == [b"1", b"2", b"3"]
    imap.logout()


def test_store_and_expunge_and_uid_expunge(box):
    imap = session(box)
    imap.select("INBOX")
    typ, data = imap.store("1:2", "+FLAGS", r"(\Deleted \Flagged $Label1)")
    assert typ == "OK" and b"$Label1" in data[0]
    typ, data = imap.store("2", "-FLAGS.SILENT", r"(\Flagged)")
    assert data == [None]
    typ, data = imap.uid("STORE", "3", "FLAGS", r"(\Answered)")
    assert b"UID 3" in data[0] and b"\\Answered" in data[0]
    imap.untagged_responses.clear()
    typ, data = imap.uid("EXPUNGE", "2")
    assert typ == "OK" and imap.untagged_responses.pop("EXPUNGE") == [b"2"]
    typ, data = imap.expunge()
    assert data == [b"1"]
    typ, data = imap.fetch("1", "(UID FLAGS)")
    assert b"UID 3" in data[0] and b"\\Answered" in data[0]
    imap.logout()
    spool = box.spool("alice").read_bytes()
    assert spool.count(b"\nFrom ") + spool.startswith(b"From ") == 1
    assert b"X-Status: A" in spool


def test_search_keys(box):
    imap = session(box)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", r"(\Flagged)")

    def search(*criteria, charset=None):
        typ, data = imap.search(charset, *criteria)
        assert typ == "OK", data
        return data[0].split()

    assert search("ALL") == [b"1", b"2", b"3"]
    assert search("FLAGGED") == [b"1"]
    assert search("UNFLAGGED") == [b"2", b"3"]
    assert search("SUBJECT", "hello") == [b"1"]
    assert search("FROM", "alice") == [b"1", b"3"]
    assert search("NOT", "FROM", "alice") == [b"2"]
    assert search("OR", "SUBJECT", "third", "FLAGGED") == [b"1", b"3"]
    assert search("BODY", '"the start"') == [b"1", b"3"]
    assert search("TEXT", "example.org") == [b"1", b"2", b"3"]
    assert search("HEADER", "Message-ID", "1@example") == [b"1", b"3"]
    assert search("SENTBEFORE", "3-Jan-2023") == [b"1", b"3"]
    assert search("SENTON", "3-Jan-2023") == [b"2"]
    assert search("LARGER", "300") == [b"2"]
    assert search("2:*") == [b"2", b"3"]
    assert search("UID", "1,3") == [b"1", b"3"]
    assert search("NEW") == [b"1", b"2", b"3"]
    assert search("SINCE", "1-Jan-2000", "BEFORE", "1-Jan-2100") == [b"1", b"2", b"3"]
    imap.literal = "Grüße".encode()
    assert search("SUBJECT", charset="UTF-8") == [b"2"]
    imap.literal = "schöne".encode()
    assert search("BODY", charset="UTF-8") == [b"2"]
    typ, data = imap.uid("SEARCH", None, "KEYWORD", "$Junk")
    assert data == [b""]
    typ, data = imap.search("KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[0]
    imap.logout()


def test_mailbox_commands(box):
    imap = session(box)
    assert imap.create("Archive/2023")[0] == "OK"
    assert imap.create("Sent")[0] == "OK"
    assert imap.create("Sent")[0] == "NO"
    assert imap.create("&AMk-t&AOk-")[0] == "OK"  # "Été" in modified UTF-7
    typ, data = imap.list()
    names = {d.rsplit(b" ", 1)[1].strip(b'"'): d for d in data}
    assert set(names) == {b"INBOX", b"Archive", b"Archive/2023", b"Sent", b"&AMk-t&AOk-"}
    assert b"\\HasChildren" in names[b"Archive"] and b"\\Noselect" in names[b"Archive"]
    typ, data = imap.list('""', "%")
    assert b"Archive/2023" not in b" ".join(data)
    assert imap.subscribe("Sent")[0] == "OK"
    typ, data = imap.lsub()
    assert data == [b'() "/" Sent']
    assert imap.unsubscribe("Sent")[0] == "OK"
    assert imap.lsub()[1] == [None]
    assert imap.rename("Sent", "Archive/Sent")[0] == "OK"
    typ, data = imap.status("Archive/Sent", "(MESSAGES UIDNEXT UNSEEN RECENT UIDVALIDITY)")
    assert typ == "OK" and b"MESSAGES 0" in data[0]
    assert imap.delete("Archive/Sent")[0] == "OK"
    assert imap.delete("Archive")[0] == "NO"  # still has Archive/2023
    assert imap.delete("INBOX")[0] == "NO"
    typ, data = imap.namespace()
    assert data == [b'(("" "/")) NIL NIL']
    imap.logout()
    assert (box.home("alice") / "mail" / "Archive" / "2023").is_file()


def test_confinement(box):
    imap = session(box)
    for name in ("../evil", "/etc/passwd", "a/../../b", ".hidden", "x.lock", "~root/x", "a//b"):
        assert imap.create(name)[0] == "NO", name
        assert imap.select(name)[0] == "NO", name
    (box.home("alice") / "mail").mkdir(exist_ok=True)
    (box.home("alice") / "mail" / "link").symlink_to("/etc")
    assert imap.select("link/passwd")[0] == "NO"
    assert imap.status("link", "(MESSAGES)")[0] == "NO"
    assert b"link" not in b" ".join(imap.list()[1])
    imap.logout()


def test_append_copy_move(box):
    imap = session(box)
    imap.create("Saved")
    typ, data = imap.append("Saved", r"(\Seen $Done)", imaplib.Time2Internaldate(1700000000), b"Subject: appended\r\n\r\nbody\r\n")
    assert typ == "OK" and b"APPENDUID" in data[0]
    assert imap.append("Nope", None, None, b"Subject: x\r\n\r\ny\r\n")[0] == "NO"
    imap.select("INBOX")
    typ, data = imap.copy("1:2", "Saved")
    assert typ == "OK" and re.search(rb"COPYUID \d+ 1:2 2:3", data[0])
    typ, data = imap.uid("MOVE", "3", "Saved")
    assert typ == "OK"
    assert imap.select("INBOX") == ("OK", [b"2"])
    imap.select("Saved")
    typ, data = imap.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [d[1] for d in data if isinstance(d, tuple)]
    assert subjects == [b"Subject: appended\r\n\r\n", b"Subject: hello\r\n\r\n",
                        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n", b"Subject: third\r\n\r\n"]
    assert b"$Done" in data[0][0] and b"14-Nov-2023" in data[0][0]
    typ, data = imap.fetch("2", "(BODY.PEEK[TEXT])")
    assert data[0][1] == b"first body line\r\n>From the start\r\n"  # stored once-quoted, not twice
    imap.logout()


def test_id_unselect_check_close(box):
    imap = session(box)
    imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
    typ, data = imap._simple_command("ID", '("name" "pytest")')
    assert typ == "OK"
    assert b"mailsuite" in imap.untagged_responses["ID"][0]
    imap.select("INBOX")
    imap.store("1", "+FLAGS", r"(\Deleted)")
    assert imap.check()[0] == "OK"
    assert imap.unselect()[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"3"])  # UNSELECT does not expunge
    assert imap.close()[0] == "OK"  # CLOSE does
    assert imap.select("INBOX") == ("OK", [b"2"])
    imap.logout()


def test_two_sessions_see_each_other(box):
    first = session(box)
    second = session(box)
    first.select("INBOX")
    second.select("INBOX")
    first.store("1", "+FLAGS", r"(\Flagged)")
    typ, _ = second.noop()
    fetches = second.untagged_responses.pop("FETCH", [])
    assert any(b"\\Flagged" in f for f in fetches)
    first.store("2", "+FLAGS", r"(\Deleted)")
    first.expunge()
    second.noop()
    assert second.untagged_responses.pop("EXPUNGE", []) == [b"2"]
    deliver(box, "alice", b"Subject: new\n\nnew\n")
    second.untagged_responses.clear()
    first.untagged_responses.clear()
    second.noop()
    assert second.untagged_responses.pop("EXISTS", []) == [b"3"]
    first.noop()
    assert first.untagged_responses.pop("EXISTS", []) == [b"3"]
    first.logout()
    second.logout()


def test_literal_plus_and_sync_literals(box):
    out, _ = raw_session(box, b"a LOGIN {5+}\r\nalice {5}\r\nalice\r\nb SELECT {5+}\r\nINBOX\r\nc LOGOUT\r\n", preauth=False)
    assert b"a OK" in out and b"b OK [READ-WRITE]" in out
    assert out.count(b"+ Ready for literal data") == 1


def test_rename_inbox_moves_its_messages(box):
    imap = session(box)
    assert imap.rename("INBOX", "Old")[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"0"])
    assert imap.select("Old") == ("OK", [b"3"])
    typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert [d[1] for d in data if isinstance(d, tuple)][0] == b"Subject: hello\r\n\r\n"
    imap.logout()


def test_special_use(box):
    set_imap_option(box, "special_use", "Sent=\\Sent Trash=\\Trash")
    imap = session(box)
    assert "SPECIAL-USE" in imap.capabilities or b"SPECIAL-USE" in imap.capability()[1][0]
    imap.create("Sent")
    imap.create("Trash")
    typ, data = imap.list()
    assert b'(\\NoInferiors \\Sent) "/" Sent' in data
    assert b'(\\NoInferiors \\Trash) "/" Trash' in data
    imap.logout()


def test_append_and_move_within_the_selected_mailbox_are_announced(box):
    imap = session(box)
    imap.select("INBOX")
    imap.untagged_responses.clear()
    imap.append("INBOX", None, None, b"Subject: more\r\n\r\nmore\r\n")
    assert imap.untagged_responses.pop("EXISTS") == [b"4"]
    imap.create("Elsewhere")
    imap.untagged_responses.clear()
    typ, data = imap._simple_command("MOVE", "2", "Elsewhere")
    assert typ == "OK"
    assert imap.untagged_responses.pop("EXPUNGE") == [b"2"]
    assert any(b"COPYUID" in r for r in imap.untagged_responses.pop("OK"))
    typ, data = imap.copy("1", "INBOX")
    assert imap.untagged_responses.pop("EXISTS") == [b"4"]
    imap.logout()


def test_big_append_round_trip(box):
    """A message bigger than the in-memory limit goes through a temporary file, byte for byte."""
    body = b"".join(b"line %07d of a big message, From the start\r\n" % n for n in range(60000))
    message = b"Subject: big\r\nFrom: a@example.org\r\n\r\n" + body
    imap = session(box)
    typ, data = imap.append("INBOX", None, None, message)
    assert typ == "OK", data
    imap.select("INBOX")
    typ, data = imap.fetch("4", "(RFC822.SIZE BODY.PEEK[TEXT]<0.44> BODY.PEEK[TEXT])")
    assert b"RFC822.SIZE %d" % len(message) in data[0][0]
    parts = [d[1] for d in data if isinstance(d, tuple)]
    assert parts[0] == b"line 0000000 of a big message, From the star"
    assert parts[1] == body
    imap.logout()


def test_changes_by_others_are_announced_even_after_our_own_write(box):
    first, second = session(box), session(box)
    first.select("INBOX")
    second.select("INBOX")
    first.store("1", "+FLAGS", r"(\Answered)")
    second.untagged_responses.clear()
    typ, fetches = second.store("2", "+FLAGS", r"(\Seen)")  # the write-back reads first's change too
    assert any(f.startswith(b"1 ") and b"\\Answered" in f for f in fetches), fetches
    first.store("3", "+FLAGS", r"(\Deleted)")
    second.untagged_responses.clear()
    typ, expunged = second.expunge()  # what the file says is \Deleted, though this session never saw it
    assert expunged == [b"3"]
    first.logout()
    second.logout()
