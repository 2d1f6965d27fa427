"""Mail between mailsuite hosts by MX, over loopback, with dnsmasq serving the zone.

Each host listens on its own loopback address (127.0.0.2, .3, .5) on one
shared port, so MX records and "is this MX me?" work exactly as between real
hosts; the daemons ask the dnsmasq on 127.0.0.1 instead of the system
resolver (`[smtp] dns_server`).
"""

import smtplib

import pytest
from mta_helpers import spool_messages as read_mbox
from smtp_helpers import Dnsmasq, Instance, free_port, wait_for

A, B, BACKUP = "127.0.0.2", "127.0.0.3", "127.0.0.5"


@pytest.fixture
def zone(tmp_path):
    dns = Dnsmasq(tmp_path,
                  mx=[("a.test", "mx.a.test", 10), ("b.test", "mx.b.test", 10), ("b.test", "backup.b.test", 20)],
                  hosts=[("mx.a.test", A), ("mx.b.test", B), ("backup.b.test", BACKUP), ("implicit.test", A)],
                  records=[("null.test", 15, "000000")])
    yield dns
    dns.stop()


@pytest.fixture
def hosts(tmp_path, zone):
    port = free_port(A, B, BACKUP)
    started = []

    def make(name, domain, address, *, hostname=None, start=True):
        smtp = {"listen": f"{address}:{port}", "remote_port": port, "dns_server": "127.0.0.1",
                "dns_port": zone.port, "dns_timeout": "5s"}
        instance = Instance(tmp_path / name, domain=domain, smtp=smtp,
                            mailsuite={"hostname": hostname or f"mx.{domain}",
                                       "local_domains": f"{domain} implicit.test" if domain == "a.test" else domain})
        instance.address = address
        if start:
            instance.start(runner=True)
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


def send(host, sender, recipients, subject):
    message = f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    with smtplib.SMTP(host.address, host.port, local_hostname="client.example") as client:
        return client.sendmail(sender, recipients, message.encode())


def spool_messages(host, user):
    return read_mbox(host.dir / "spool" / user)


def test_mail_crosses_by_mx_in_both_directions(hosts):
    a = hosts("a", "a.test", A)
    b = hosts("b", "b.test", B)
    send(a, "alice@a.test", ["bob@b.test"], "over there")
    [arrived] = wait_for(lambda: spool_messages(b, "bob"))
    assert arrived["Subject"] == "over there"
    received = arrived.get_all("Received")
    assert len(received) == 2
    assert received[0].startswith("from mx.a.test") and "by mx.b.test" in received[0]
    send(b, "bob@b.test", ["alice@a.test"], "and back")
    [reply] = wait_for(lambda: spool_messages(a, "alice"))
    assert reply["Subject"] == "and back"
    assert "status=sent" in a.log_text() and "relay=mx.b.test[127.0.0.3]" in a.log_text()


def test_implicit_mx_is_the_domain_address(hosts):
    a = hosts("a", "a.test", A)
    b = hosts("b", "b.test", B)
    send(b, "bob@b.test", ["alice@implicit.test"], "no MX record")
    [arrived] = wait_for(lambda: spool_messages(a, "alice"))
    assert arrived["Subject"] == "no MX record"


def test_null_mx_and_nonexistent_domain_bounce_to_the_sender(hosts):
    a = hosts("a", "a.test", A)
    send(a, "alice@a.test", ["someone@null.test", "nobody@nowhere.test"], "doomed")
    bounces = wait_for(lambda: [m for m in spool_messages(a, "alice")
                                if "null.test" in str(m) and "nowhere.test" in str(m)] or
                       (len(spool_messages(a, "alice")) >= 2 and spool_messages(a, "alice")))
    text = "".join(str(m) for m in bounces)
    assert "5.1.10" in text or "null MX" in text
    assert "5.1.2" in text or "does not exist" in text
    log = a.log_text()
    assert "to=<someone@null.test>" in log and "status=bounced" in log


def test_backup_mx_queues_while_the_primary_is_down_and_forwards_later(hosts):
    a = hosts("a", "a.test", A)
    backup = hosts("backup", "backup.test", BACKUP, hostname="backup.b.test")
    b = hosts("b", "b.test", B, start=False)
    send(a, "alice@a.test", ["bob@b.test"], "via the backup")
    wait_for(lambda: backup.queued())                    # the backup took it
    [(envelope, _)] = backup.queued()
    assert envelope.recipients == ["bob@b.test"]
    wait_for(lambda: "status=deferred" in backup.log_text())
    assert "backup.b.test[" not in backup.log_text()     # never relays to itself or a worse MX
    b.start(runner=True)
    [arrived] = wait_for(lambda: spool_messages(b, "bob"), timeout=60)
    assert arrived["Subject"] == "via the backup"
    assert len(arrived.get_all("Received")) == 3
    wait_for(lambda: not backup.queued())
