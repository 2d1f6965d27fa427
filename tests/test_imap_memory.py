"""A session's memory stays flat however long it runs (issue 12, item 10).

These tests look at the structures a session keeps beside its view of the
mailbox, which must be bounded by the mailbox, never by the session's length.
"""

from mailsuite.imap.mailboxes import MailStore
from mailsuite.imap.selected import FlagChange, SelectedMailbox


def test_keyword_sets_no_message_has_any_more_are_forgotten(sandbox):
    """Every keyword combination seen gets a number; a session changing keywords for ever keeps only those in use."""
    for n in range(3):
        sandbox.deliver("alice", b"Subject: %d\n\nbody\n" % n)
    store = MailStore(sandbox.cfg, sandbox.user("alice"))
    writer = SelectedMailbox(store, "INBOX", False)
    reader = SelectedMailbox(MailStore(sandbox.cfg, sandbox.user("alice")), "INBOX", False)
    uid = writer.uids[1]
    for n in range(300):
        writer.store([uid], FlagChange("", frozenset(), (f"k{n}", f"k{n + 1}")))
        writer.refresh()
        reader.refresh()
    assert len(writer.keyword_sets) < 150 and len(reader.keyword_sets) < 150
    for session in (writer, reader):
        assert session.flags_of(uid)[1] == ("k299", "k300")
        assert session.flags_of(session.uids[0])[1] == ()
