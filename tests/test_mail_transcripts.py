"""Transcript tests: a spool, the commands a user types, the output expected, exactly.

Each tests/transcripts/mail/NAME.txt has three parts after its comment
lines: `== spool` (an mbox, delivered as it stands), `== commands` (fed to
`mail` on standard input, so no prompts are echoed) and `== output` (what
`mail` must print, its one-line errors in place; the sandbox's directory
reads SANDBOX); an optional `== after` is the spool once `mail` has ended,
the store's own UID and padding headers left out.  Cheap, exact
and readable, in the manner of GNU Mailutils' mail tests.
"""

import re
import subprocess
from pathlib import Path

import pytest
from conftest import program

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts" / "mail").glob("*.txt"))


def parse(path):
    parts, current = {}, None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("== "):
            current = line[3:].strip()
            parts[current] = ""
        elif current:
            parts[current] += line
    return parts


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(mail_sandbox, path):
    sb = mail_sandbox
    parts = parse(path)
    sb.spool().write_bytes(parts["spool"].encode())
    sb.env["TZ"] = "UTC"
    sb.env["COLUMNS"] = "80"
    done = subprocess.run([program("mail"), "-C", sb.conf, "-u", "alice"], input=parts["commands"].encode(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=sb.env)
    output = done.stdout.decode().replace(str(sb.dir), "SANDBOX")
    assert output == parts["output"]
    if "after" in parts:                                # the spool once mail has quit
        kept = re.sub(r"X-Keywords: *\n|X-UID: \d+\n|X-IMAPbase: .*\n", "", sb.spool().read_text())
        assert kept == parts["after"]
