"""A `/file` target of an alias is appended to by the store's one append path, like a mailbox.

A body without a final newline gets one and the blank line that separates
messages, so the next message is never glued on; the append has its crash
record, so a killed delivery leaves no half message (see test_faults).
"""

import mailbox

from mailsuite.store.mailbox import Mailbox


def test_a_body_without_final_newline_is_not_glued_to_the_next_message(sandbox, tmp_path):
    archive = tmp_path / "archive"
    (sandbox.dir / "aliases").write_text(f"archive: {archive}\n")
    assert sandbox.run("sendmail", "-bi").returncode == 0
    for message in (b"Subject: one\n\nno final newline", b"Subject: two\n\nsecond\n"):
        done = sandbox.run("sendmail", "-odi", "-i", "-f", "s@example.org", "archive", input=message)
        assert done.returncode == 0, done.stderr
    ours = Mailbox(str(archive), sandbox.cfg)
    try:
        stored = [ours.read(m, m.body, m.end) for m in ours.scan().messages]
    finally:
        ours.close()
    assert stored == [b"no final newline\n", b"second\n"]
    theirs = mailbox.mbox(str(archive), create=False)
    assert [m["Subject"] for m in theirs] == ["one", "two"]
    assert [m["Delivered-To"] for m in theirs] == ["archive@localhost"] * 2
