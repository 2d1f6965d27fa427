"""A session's memory stays flat however long it runs (issue 12, item 10).

These tests look at the structures a session keeps beside its view of the
mailbox, which must be bounded by the mailbox, never by the session's length.
"""

import logging
import os

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


def test_the_memory_a_long_command_freed_goes_back_to_the_system(sandbox, monkeypatch):
    """After big work (a FETCH or SEARCH of thousands of messages) the session is as small as before it."""
    from mailsuite.core import memory
    from mailsuite.imap import session as imap_session
    from mailsuite.server.connection import Connection
    released = []
    monkeypatch.setattr(memory, "release_freed", lambda: released.append(True))
    sandbox.deliver("alice", b"Subject: one\n\nbody\n")
    to_server, client_writes = os.pipe()
    client_reads, from_server = os.pipe()
    os.write(client_writes, b"a SELECT INBOX\r\nb NOOP\r\nc LOGOUT\r\n")
    os.close(client_writes)
    conn = Connection(rfd=to_server, wfd=from_server, timeout=10)
    session = imap_session.Session(conn, sandbox.cfg, logging.getLogger("test"), preauth_user=sandbox.user("alice"))
    monkeypatch.setattr(imap_session, "LONG_COMMAND", 1e9)     # quick commands: nothing to give back
    session.execute(conn.readline(1000))
    assert not released
    monkeypatch.setattr(imap_session, "LONG_COMMAND", 0)       # every command counts as long
    session.run()
    conn.flush()
    assert len(released) == 2
    assert b"b OK" in os.read(client_reads, 65536)
    for fd in (to_server, client_reads, from_server):
        os.close(fd)
