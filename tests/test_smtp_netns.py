"""Real mail hosts: network namespaces on one bridge, dnsmasq serving the MX records, port 25.

Hosts: ns-a 10.253.0.1 (a.test, also the DNS server), ns-b 10.253.0.2
(mx.b.test, primary MX of b.test), ns-c 10.253.0.3 (backup.b.test, its
backup MX), ns-p 10.253.0.4 (mx.p.test: Postfix).  Root only; skipped
when `ip netns` cannot be used.
"""

import subprocess

import peers
import pytest
from mta_helpers import spool_messages as read_mbox
from netlan import Lan
from serverlib import make_certificate
from smtp_helpers import Dnsmasq, Instance, ThrowawayPostfix, wait_for

pytestmark = pytest.mark.root

SUBNET = "10.253.0"
HOSTS = {"a": 1, "b": 2, "c": 3, "p": 4}


@pytest.fixture
def lan(tmp_path):
    peers.require_root("it creates network namespaces")
    peers.require("ip")
    try:
        network = Lan(HOSTS, SUBNET)
    except subprocess.CalledProcessError as exc:
        peers.unavailable("ip netns", exc.stderr.strip())
    started = []
    try:
        dns = Dnsmasq(tmp_path, netns=network.names["a"], address=f"{SUBNET}.1", port=53,
                      mx=[("a.test", "mx.a.test", 10), ("b.test", "mx.b.test", 10), ("b.test", "backup.b.test", 20),
                          ("p.test", "mx.p.test", 10)],
                      hosts=[("mx.a.test", f"{SUBNET}.1"), ("mx.b.test", f"{SUBNET}.2"),
                             ("backup.b.test", f"{SUBNET}.3"), ("mx.p.test", f"{SUBNET}.4")],
                      records=[("null.test", 15, "000000")])
        started.append(dns)
        network.started = started
        yield network
    finally:
        for thing in reversed(started):
            thing.stop()
        network.delete()


def mail_host(lan, tmp_path, host, domain, hostname, *, start=True):
    instance = Instance(tmp_path / host, domain=domain,
                        mailsuite={"hostname": hostname},
                        smtp={"listen": f"{SUBNET}.{HOSTS[host]}:25", "dns_server": f"{SUBNET}.1",
                              "relay_networks": f"127.0.0.0/8 {SUBNET}.0/24", "connect_timeout": "3s"})
    instance.netns = lan.names[host]
    if start:
        instance.start(runner=True)
    lan.started.append(instance)
    return instance


def swaks_in(lan, host, sender, recipient, subject):
    result = subprocess.run(["ip", "netns", "exec", lan.names[host], "swaks", "--server", f"{SUBNET}.{HOSTS[host]}:25",
                             "--from", sender, "--to", recipient, "--helo", "client.example",
                             "--header", f"Subject: {subject}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


needs_swaks = peers.needs("swaks")


@needs_swaks
def test_backup_mx_null_mx_and_unknown_domain(lan, tmp_path):
    a = mail_host(lan, tmp_path, "a", "a.test", "mx.a.test")
    c = mail_host(lan, tmp_path, "c", "backup.test", "backup.b.test")
    b = mail_host(lan, tmp_path, "b", "b.test", "mx.b.test", start=False)
    swaks_in(lan, "a", "alice@a.test", "bob@b.test", "while the primary is down")
    wait_for(lambda: c.queued(), timeout=60)                       # the backup MX holds it
    b.start(runner=True)
    [arrived] = wait_for(lambda: read_mbox(b.dir / "spool" / "bob"), timeout=90)
    assert arrived["Subject"] == "while the primary is down"
    assert any("by backup.b.test" in r for r in arrived.get_all("Received"))
    # back from b to a, directly
    swaks_in(lan, "b", "bob@b.test", "alice@a.test", "reply")
    wait_for(lambda: any(m["Subject"] == "reply" for m in read_mbox(a.dir / "spool" / "alice")), timeout=60)
    # a null MX and a domain that does not exist bounce to the sender
    swaks_in(lan, "a", "alice@a.test", "x@null.test", "to a null MX")
    swaks_in(lan, "a", "alice@a.test", "y@nowhere.test", "to nowhere")
    wait_for(lambda: sum("null.test" in str(m) or "nowhere.test" in str(m)
                         for m in read_mbox(a.dir / "spool" / "alice")) >= 2, timeout=60)


@needs_swaks
@peers.needs("postfix")
def test_postfix_host_in_both_directions(lan, tmp_path):
    a = mail_host(lan, tmp_path, "a", "a.test", "mx.a.test")
    postfix = _postfix_in(lan)
    swaks_in(lan, "a", "alice@a.test", "carol@p.test", "to Postfix")
    wait_for(lambda: "status=sent" in postfix.log_text() and "carol" in postfix.log_text(), timeout=60)
    mbox = postfix.dir / "vmail" / "carol"
    wait_for(lambda: mbox.exists() and b"to Postfix" in mbox.read_bytes(), timeout=60)
    swaks_in(lan, "p", "carol@p.test", "alice@a.test", "from Postfix")
    wait_for(lambda: any(m["Subject"] == "from Postfix" for m in read_mbox(a.dir / "spool" / "alice")), timeout=90)


def _postfix_in(lan):
    import pwd
    uid = pwd.getpwnam("postfix").pw_uid
    gid = pwd.getpwnam("postfix").pw_gid
    postfix = ThrowawayPostfix({
        "myhostname": "mx.p.test", "mynetworks": f"127.0.0.0/8 {SUBNET}.0/24",
        "smtp_dns_support_level": "enabled", "disable_dns_lookups": "no",
        "virtual_mailbox_domains": "p.test", "virtual_mailbox_maps": "inline:{ carol@p.test=carol }",
        "virtual_uid_maps": f"static:{uid}", "virtual_gid_maps": f"static:{gid}", "virtual_minimum_uid": "1",
        "smtp_host_lookup": "dns",
    }, address=f"{SUBNET}.4", port=25, netns=lan.names["p"])
    lan.started.append(postfix)
    return postfix


@needs_swaks
def test_remote_client_no_relay_and_auth_only_inside_tls(lan, tmp_path):
    peers.require_swaks("TLS", "Basic AUTH")
    cert, key = make_certificate(tmp_path)
    a = Instance(tmp_path / "a", domain="a.test", mailsuite={"hostname": "mx.a.test"},
                 smtp={"listen": f"{SUBNET}.1:25", "dns_server": f"{SUBNET}.1", "tls_cert_file": cert,
                       "tls_key_file": key})                      # relay_networks: loopback only (default)
    a.netns = lan.names["a"]
    a.start()
    lan.started.append(a)

    def swaks_from_b(*args):
        return subprocess.run(["ip", "netns", "exec", lan.names["b"], "swaks", "--server", f"{SUBNET}.1:25",
                               "--helo", "client.b.test", "--from", "bob@b.test", *args],
                              capture_output=True, text=True, timeout=60)

    denied = swaks_from_b("--to", "victim@elsewhere.test")
    assert "554 5.7.1" in denied.stdout
    local = swaks_from_b("--to", "alice@a.test")
    assert local.returncode == 0, local.stdout
    clear = swaks_from_b("--to", "victim@elsewhere.test", "--auth", "PLAIN", "--auth-user", "alice",
                         "--auth-password", "alice")
    assert clear.returncode != 0 and "did not advertise authentication" in clear.stderr   # not in clear text
    tls = swaks_from_b("--to", "friend@elsewhere.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                       "--auth-password", "alice")
    assert tls.returncode == 0, tls.stdout
    [relayed] = [env for env, _ in a.queued() if env.recipients == ["friend@elsewhere.test"]]
    assert relayed.auth_user == "alice"
