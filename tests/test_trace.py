"""The hop tracer: Received: lines of every MTA in tests/trace_corpus/, `mailsuite trace`, and `trace` in mail.

The corpus holds headers written by real runs of Postfix, Exim, OpenSMTPD,
Sendmail, Dovecot LMTP and mailsuite (made by tests/test_trace_relay.py,
whose regenerate step rewrites them), and published samples for Exchange,
Gmail and qmail, which cannot run here.  Each expectation below names the
fields the tracer must read from that MTA's line.
"""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import program
from mail_harness import message, quit_cleanly

from mailsuite.trace import hops as trace
from mailsuite.trace import render as trace_render

CORPUS = Path(__file__).parent / "trace_corpus"


def corpus(name):
    return trace.trace_message((CORPUS / name).read_bytes())


def test_every_corpus_file_traces_with_each_line_kept():
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        result = trace.trace_message(data)
        header = trace.read_header(data).decode("utf-8", "replace")
        assert len(result.hops) == header.count("\nReceived:") + header.startswith("Received:"), path.name
        assert [h.index for h in result.hops] == list(range(1, len(result.hops) + 1))
        text = trace_render.text(result)
        assert all(f"#{h.index}" in text for h in result.hops)


@pytest.mark.parametrize("line, expected", [
    ("from mail.example.org (mail.example.org [192.0.2.7]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
     "(256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256) "
     "(No client certificate requested) by mx.example.com (Postfix) with ESMTPS id 4T8Xq02n3Hz9sNl "
     "for <bob@example.com>; Tue, 9 Jan 2024 12:15:38 +0100 (CET)",
     dict(mta="Postfix", from_host="mail.example.org", from_ip="192.0.2.7", by_host="mx.example.com",
          protocol="ESMTPS", tls="TLSv1.3 TLS_AES_256_GCM_SHA384", id="4T8Xq02n3Hz9sNl",
          recipient="bob@example.com")),
    ("from relay.example.net (relay.example.net [192.0.2.10]) by mx.example.com (8.12.5/8.12.5) "
     "with ESMTP id g7TAHpm12345 for <bob@example.com>; Thu, 29 Aug 2002 10:17:51 +0200",
     dict(mta="Sendmail", by_host="mx.example.com", protocol="ESMTP", id="g7TAHpm12345", tls="")),
    ("from relay.example.net (relay.example.net [192.0.2.10]) (version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 "
     "bits=256 verify=NOT) by mx.example.com (8.17.1.9/8.17.1.9/Debian-2) with ESMTPS id 40CA0Bq5 "
     "for <bob@example.com>; Fri, 12 Jan 2024 10:00:40 +0000",
     dict(mta="Sendmail", tls="TLSv1.3 TLS_AES_256_GCM_SHA384")),
    ("from [192.0.2.1] (helo=client.example) by mx.example.com with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384 "
     "(Exim 4.96) (envelope-from <a@example.org>) id 1rNqYx-000123-AB for bob@example.com; "
     "Mon, 08 Jan 2024 10:00:00 +0000",
     dict(mta="Exim", from_host="client.example", from_ip="192.0.2.1", protocol="esmtps",
          tls="TLS1.3 TLS_AES_256_GCM_SHA384", id="1rNqYx-000123-AB", recipient="bob@example.com")),
    ("from client.example (client.example [192.0.2.1]) by mx.example.com (OpenSMTPD) with ESMTPS id 6b4a1c2f "
     "(TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO) for <bob@example.com>; Mon, 8 Jan 2024 10:00:00 +0000 (UTC)",
     dict(mta="OpenSMTPD", tls="TLSv1.3 TLS_AES_256_GCM_SHA384", id="6b4a1c2f")),
    ("from mx.example.com by mx.example.com with LMTP id kLmNoPqRsTuVwXyZaBcDeA (envelope-from <a@example.org>) "
     "for <bob@example.com>; Mon, 08 Jan 2024 10:00:01 +0000",
     dict(mta="LMTP (Dovecot)", protocol="LMTP", recipient="bob@example.com")),
    ("from helo.example (localhost [127.0.0.1]) by mx.example.com (mailsuite) with ESMTPSA for <bob@x.test>; "
     "Mon, 08 Jan 2024 10:00:01 +0000",
     dict(mta="mailsuite", tls="yes", protocol="ESMTPSA", from_ip="127.0.0.1")),
    ("by mx.example.com (mailsuite, from userid 1000) id 18A2B3C4D5E6F708 for <bob@x.test>; "
     "Mon, 08 Jan 2024 10:00:01 +0000",
     dict(mta="mailsuite", id="18A2B3C4D5E6F708", from_host="")),
    ("(qmail 29513 invoked by uid 89); 11 Jan 2024 14:02:09 -0000", dict(mta="qmail", by_host="")),
])
def test_received_formats(line, expected):
    hop = trace.parse_received(line, 1)
    assert hop.parsed and hop.time is not None, hop
    for name, value in expected.items():
        assert getattr(hop, name) == value, (name, hop)


def test_real_relay_through_five_mtas():
    """Written by test_trace_relay.py: mailsuite, Exim (holding it), OpenSMTPD, Sendmail, Postfix, Dovecot LMTP."""
    relay = corpus("relay.eml")
    assert [h.mta for h in relay.hops] == ["mailsuite", "Exim", "OpenSMTPD", "Sendmail", "Postfix", "LMTP (Dovecot)"]
    assert all(h.parsed and h.time and h.id or h.mta == "mailsuite" for h in relay.hops)
    assert [h.from_ip for h in relay.hops[1:5]] == [f"10.254.0.{n}" for n in range(1, 5)]
    assert relay.slowest.index == 3 and relay.holder(relay.slowest) == "mx.b.test"


def test_published_samples_exchange_gmail_qmail():
    exchange = corpus("exchange.eml")
    assert {h.mta for h in exchange.hops[:-1]} == {"Microsoft Exchange"}
    assert exchange.hops[1].tls.startswith("TLS1_2") and exchange.hops[1].id == "15.1.2507.27"
    assert exchange.hops[0].from_ip == "fe80::1c4b:6d2a:a1f2:11b2"
    assert exchange.slowest.index == 3 and exchange.total == 14
    gmail = corpus("gmail.eml")
    assert [h.mta for h in gmail.hops] == ["Postfix", "Gmail", "Gmail"]
    assert gmail.hops[1].tls == "TLS1_3 TLS_AES_256_GCM_SHA384"
    assert [h.delay for h in gmail.hops] == [1, 2, 1]                    # +0100 and -0800 compared right
    qmail = corpus("qmail.eml")
    assert [h.mta for h in qmail.hops] == ["qmail"] * 4
    assert qmail.hops[0].from_ip == "198.51.100.40" and qmail.hops[2].from_host == "mail.example.net"


def test_clock_skew_and_an_unparseable_line_are_shown_not_dropped():
    result = corpus("skew_and_garbage.eml")
    assert [h.parsed for h in result.hops] == [True, False, True]
    assert result.hops[1].text == "this line is not a trace line at all"
    assert result.hops[2].skew and result.hops[2].delay == -35
    text = trace_render.text(result)
    assert "UNPARSED (no from/by clause): this line is not a trace line at all" in text
    assert "clock skew: hop #3 (mx.example.com) is stamped 35 s before" in text
    assert "CLOCK SKEW" in text


def test_slowest_hop_names_the_host_that_held_the_message():
    header = (b"Received: from b.example (b.example [192.0.2.2]) by c.example (Postfix) with ESMTP id C1; "
              b"Mon, 8 Jan 2024 10:05:03 +0000\n"
              b"Received: from a.example (a.example [192.0.2.1]) by b.example (Exim 4.96) with esmtp id B1; "
              b"Mon, 8 Jan 2024 10:00:02 +0000\n"
              b"Received: by a.example (mailsuite, from userid 1000) id A1; Mon, 8 Jan 2024 10:00:01 +0000\n"
              b"Date: Mon, 8 Jan 2024 10:00:00 +0000\n\n")
    result = trace.trace_message(header)
    assert result.slowest.index == 3 and result.slowest.delay == 301
    assert result.holder(result.slowest) == "b.example"
    assert "slowest hop: #3 (5 min 1 s), the message waited at b.example" in trace_render.text(result)
    picture = trace_render.bars(result)
    assert [round(width, 3) for _, _, width in picture] == [round(1 / 303, 3), round(1 / 303, 3), round(301 / 303, 3)]


def test_a_line_without_a_date_keeps_its_clauses():
    hop = trace.parse_received("from a.example by b.example with SMTP", 1)
    assert hop.parsed and hop.time is None and hop.problem == "no date" and hop.by_host == "b.example"


def test_mailsuite_trace_command_text_json_and_stdin(tmp_path):
    path = CORPUS / "skew_and_garbage.eml"
    done = subprocess.run([program("mailsuite"), "trace", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "timeline:" in done.stdout and "slowest hop: #1" in done.stdout
    done = subprocess.run([program("mailsuite"), "trace", "--json"], input=path.read_bytes(),
                          capture_output=True, timeout=60)
    data = json.loads(done.stdout)
    assert data["clock_skew"] == [3] and data["slowest"]["index"] == 1 and len(data["hops"]) == 3
    assert data["hops"][1]["parsed"] is False
    missing = subprocess.run([program("mailsuite"), "trace", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 66 and missing.stderr.count("\n") == 1
    (tmp_path / "empty").write_text("hello\n")
    empty = subprocess.run([program("mailsuite"), "trace", str(tmp_path / "empty")], capture_output=True, text=True)
    assert empty.returncode == 65 and "no Received:" in empty.stderr


def test_trace_in_mail_shows_the_current_message(mail_sandbox):
    sb = mail_sandbox
    sb.deliver(message("traced", extra="Received: from a.example (a.example [192.0.2.1]) by b.example "
                                         "(Postfix) with ESMTP id Q1; Tue, 24 Nov 2026 07:00:09 +0000\n"))
    child = sb.spawn()
    child.expect(r"\? ")
    child.sendline("trace")
    child.expect("Message 1:")
    child.expect(r"by   b\.example \(Postfix\)")
    child.expect("slowest hop: #1 \\(9 s\\)")
    child.expect(r"\? ")
    assert quit_cleanly(child) == 0
