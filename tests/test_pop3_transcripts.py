"""pop3d sessions on stdin/stdout against recorded transcripts (tests/transcripts/pop3/*.t).

A transcript holds the client's lines (`C: `) and the server's (`S: `); the
client's lines are sent at once, as a pipelining client would, to `pop3d`
in inetd mode, and the whole output must equal the `S: ` lines.  `{UIDVALIDITY}`
stands for the spool's UIDVALIDITY in hex.  Each session starts on the same
three-message spool of alice's.
"""

import subprocess
from pathlib import Path

import pytest
from conftest import program
from pop3lib import configure, deliver_to, message

from mailsuite.store.mailbox import Mailbox

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts" / "pop3").glob("*.t"))


def parse(path):
    sent, expected = [], []
    for line in path.read_text().splitlines():
        if line.startswith("C: ") or line == "C:":
            sent.append(line[3:])
        elif line.startswith("S: ") or line == "S:":
            expected.append(line[3:])
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"{path.name}: not C:, S: or a comment: {line!r}")
    return sent, expected


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(sandbox, path):
    configure(sandbox, {"auth": {"failure_delay": "0"}})
    sandbox.clear_spools()
    deliver_to(sandbox, "alice", message("one"))
    deliver_to(sandbox, "alice", message("two", body=".leading dot\n..two dots\n.\n>From quoted\nend\n"))
    deliver_to(sandbox, "alice", message("three", body="line 1\nline 2\nline 3\n"))
    sent, expected = parse(path)
    done = subprocess.run([program("pop3d"), "-C", sandbox.conf], input="".join(s + "\r\n" for s in sent).encode(),
                          capture_output=True, timeout=60, env=sandbox.env)
    uidvalidity = Mailbox(str(sandbox.spool("alice")), sandbox.cfg).scan().uidvalidity
    want = "".join(line.replace("{UIDVALIDITY}", f"{uidvalidity:08x}") + "\r\n" for line in expected)
    assert done.stdout.decode() == want
    assert done.returncode == 0
