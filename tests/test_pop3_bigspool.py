"""Big messages stream: RETR of a 40 MB message keeps the session's memory near its start-up size.

pop3d runs under GNU time, so the peak RSS measured is its own and not
the test process's (a child forked from pytest starts with pytest's pages).
"""

import subprocess

import peers
import pytest
from conftest import program
from pop3lib import configure, deliver_to, message


def peak_rss_kib(sandbox, commands, tmp_path):
    """Run one pop3d session under /usr/bin/time; (its output size, its peak RSS in KiB)."""
    report = tmp_path / "time.txt"
    done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), program("pop3d"), "-C", sandbox.conf],
                          input=commands, capture_output=True, env=sandbox.env, timeout=120)
    assert done.returncode == 0
    return done.stdout, int(report.read_text().split()[-1])


@pytest.mark.slow
def test_retr_of_a_big_message_streams(sandbox, tmp_path):
    peers.require("gnu-time")
    configure(sandbox, {"auth": {"failure_delay": "0"}})
    deliver_to(sandbox, "alice", message("big", body=("." + "z" * 70 + "\n") * 560_000))
    _, baseline = peak_rss_kib(sandbox, b"USER alice\r\nPASS alice\r\nSTAT\r\nQUIT\r\n", tmp_path)
    out, peak = peak_rss_kib(sandbox, b"USER alice\r\nPASS alice\r\nLIST 1\r\nRETR 1\r\nQUIT\r\n", tmp_path)
    lines = out.split(b"\r\n", 4)
    octets = int(lines[3].split()[2])
    assert lines[4].startswith(b"+OK %d octets\r\n" % octets)
    body = lines[4][len(b"+OK %d octets\r\n" % octets):]
    assert body.endswith(b"\r\n.\r\n+OK bye (0 messages deleted)\r\n")
    assert len(body) - len(b".\r\n+OK bye (0 messages deleted)\r\n") == octets > 40_000_000
    assert peak < baseline + 16 * 1024, (baseline, peak)      # KiB: the 40 MB message is never held whole
