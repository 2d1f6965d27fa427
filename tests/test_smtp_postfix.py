"""Postfix as the peer: our client hands mail to Postfix, Postfix's client hands it back to us."""

import smtplib

import peers
import pytest
from mta_helpers import spool_messages as read_mbox
from smtp_helpers import Instance, ThrowawayPostfix, free_port, wait_for

pytestmark = [pytest.mark.root, peers.needs("postfix")]

OURS = "127.0.0.2"


@pytest.fixture
def pair(tmp_path):
    port = free_port(OURS)
    postfix = ThrowawayPostfix({
        "virtual_alias_domains": "p.test",
        "virtual_alias_maps": "inline:{ bob@p.test=bob@a.test }",
        "transport_maps": f"inline:{{ a.test=smtp:[{OURS}]:{port} }}",
    })
    ours = Instance(tmp_path / "a", domain="a.test",
                    smtp={"listen": f"{OURS}:{port}", "static_routes": f"p.test=127.0.0.1:{postfix.port}"})
    ours.start(runner=True)
    yield ours, postfix
    ours.stop()
    postfix.stop()


def test_round_trip_through_postfix(pair):
    ours, postfix = pair
    body = "From: alice@a.test\r\nTo: bob@p.test\r\nSubject: via Postfix\r\n\r\n.dot line\r\n8-bit: Gr\u00fc\u00dfe\r\n"
    with smtplib.SMTP(OURS, ours.port, local_hostname="client.example") as client:
        client.sendmail("alice@a.test", ["bob@p.test"], body.encode())
    [arrived] = wait_for(lambda: read_mbox(ours.dir / "spool" / "bob"), timeout=60)
    assert arrived["Subject"] == "via Postfix"
    assert ".dot line" in arrived.get_payload()
    received = arrived.get_all("Received")
    assert len(received) == 3                  # ours (from the client), Postfix's, ours again
    assert "(Postfix)" in received[1] or "mx.p.test" in received[1]
    assert "status=sent" in ours.log_text() and f"127.0.0.1]:{postfix.port}" in ours.log_text()
    assert "status=sent" in postfix.log_text() and f"[{OURS}]:{ours.port}" in postfix.log_text()


def test_postfix_refusal_bounces_back_to_the_sender(pair):
    ours, postfix = pair
    with smtplib.SMTP(OURS, ours.port, local_hostname="client.example") as client:
        client.sendmail("alice@a.test", ["nobody@p.test"], b"Subject: to nobody\r\n\r\nhello\r\n")
    bounce = wait_for(lambda: read_mbox(ours.dir / "spool" / "alice"), timeout=60)
    assert "nobody@p.test" in str(bounce[0])
    assert "status=bounced" in ours.log_text()
