"""Transcripts: a client script in, the exact server replies out.

Each file in tests/transcripts/imap/ holds `C:` lines (sent to
`imapd --preauth alice` on stdin, all at once) and `S:` lines (what must
come back, in order).  `<ANY>` in an S: line matches any text (for
UIDVALIDITY and dates).  The spool starts with the messages in
tests/transcripts/imap/messages/, delivered by mail.local in name order,
or in the directory named like the transcript (structure.t: structure/)
when there is one.
"""

import re
from pathlib import Path

import pytest
from imap_support import deliver, raw_session

HERE = Path(__file__).resolve().parent / "transcripts" / "imap"
TRANSCRIPTS = sorted(HERE.glob("*.t"))


def load(path):
    client, server = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("C: "):
            client.append(line[3:])
        elif line.startswith("S: "):
            server.append(line[3:])
        elif line == "S:":
            server.append("")
    return client, server


def pattern(expected):
    return re.compile(".*".join(re.escape(part) for part in expected.split("<ANY>")) + r"\Z", re.S)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(sandbox, path):
    spool = path.with_suffix("") if path.with_suffix("").is_dir() else HERE / "messages"
    for message in sorted(spool.glob("*.eml")):
        deliver(sandbox, "alice", message.read_bytes())
    client, server = load(path)
    out, status = raw_session(sandbox, "".join(line + "\r\n" for line in client).encode())
    assert status == 0
    got = out.decode("utf-8", "replace").split("\r\n")
    if got and got[-1] == "":
        got.pop()
    for number, (expected, actual) in enumerate(zip(server, got), 1):
        assert pattern(expected).match(actual), f"{path.name}: reply line {number}: {actual!r} != {expected!r}"
    assert len(got) == len(server), f"{path.name}: {len(got)} reply lines, expected {len(server)}:\n" + "\n".join(got)
