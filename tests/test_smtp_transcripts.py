"""Transcript tests: `sendmail -bs` style sessions on stdin/stdout, no network.

Each tests/transcripts/smtp/NAME.smtp holds the session: `C:` lines are
what the client types (sent with LF line ends, as a terminal or script
would), `S:` lines the replies expected, as shell-style patterns (`*`
matches a queue id or a date).
"""

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_helpers import LIB, Instance

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts" / "smtp").glob("*.smtp"))

_STDIO = """
import sys
from mailsuite.core import config
from mailsuite.mta.smtp import daemon as smtpd
sys.exit(smtpd.smtp_on_stdio(config.load(sys.argv[1], required=True), "alice"))
"""


def run_stdio(instance, client_text):
    env = dict(os.environ, PYTHONPATH=str(LIB))
    return subprocess.run([sys.executable, "-c", _STDIO, instance.conf], input=client_text,
                          capture_output=True, env=env, timeout=60)


def parse(path):
    client, server = [], []
    for line in path.read_text().splitlines():
        if line.startswith("C:"):
            client.append(line[3:] if line.startswith("C: ") else line[2:])
        elif line.startswith("S: "):
            server.append(line[3:])
    return "".join(line + "\n" for line in client).encode(), server


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(tmp_path, path):
    instance = Instance(tmp_path / "host")
    client_text, expected = parse(path)
    result = run_stdio(instance, client_text)
    assert result.returncode == 0, result.stderr.decode()
    replies = result.stdout.decode().split("\r\n")
    assert replies[-1] == ""
    replies = replies[:-1]
    for number, (got, want) in enumerate(zip(replies, expected), 1):
        assert fnmatch.fnmatchcase(got, want), f"{path.name}: reply {number}: {got!r} does not match {want!r}"
    assert len(replies) == len(expected), replies


def test_stdio_message_is_queued_with_lf_line_ends(tmp_path):
    instance = Instance(tmp_path / "host")
    client_text, _ = parse(Path(__file__).parent / "transcripts" / "smtp" / "basic.smtp")
    assert run_stdio(instance, client_text).returncode == 0
    [(envelope, data)] = instance.queued()
    assert envelope.sender == "alice@example.test"
    assert envelope.recipients == ["bob@example.test", "carol@elsewhere.test"]   # a local user may relay
    assert re.match(rb"Received: by mx.example.test \(mailsuite, from user alice\) with ESMTP id [0-9A-F]+; ", data)
    assert data.endswith(b"Subject: transcript\n\n.a dot-stuffed line\n")


def test_stdio_end_of_input_mid_data_queues_nothing(tmp_path):
    instance = Instance(tmp_path / "host")
    result = run_stdio(instance, b"EHLO localhost\nMAIL FROM:<alice@example.test>\nRCPT TO:<bob@example.test>\n"
                                 b"DATA\nSubject: cut short\n\nno end")
    assert result.returncode == 0
    assert b"queued" not in result.stdout
    assert instance.queued() == []
