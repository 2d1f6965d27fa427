"""The SMTP client and MX routing against scripted servers and a private dnsmasq."""

import io
import socket
import threading

import pytest
from smtp_helpers import Dnsmasq, free_port

from mailsuite.core import config
from mailsuite.mta.smtp import client as smtp_client
from mailsuite.mta.smtp import mx


class ScriptedServer:
    """An SMTP server on ADDRESS:PORT that answers from a table and records what it got, byte for byte."""

    def __init__(self, address, port, *, greeting="220 scripted ESMTP", replies=None, extensions=("SIZE", "8BITMIME")):
        self.greeting = greeting
        self.replies = dict(replies or {})
        self.extensions = extensions
        self.data = []
        self.commands = []
        self.sock = socket.create_server((address, port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._session(conn.makefile("rb"), conn)

    def _session(self, rfile, conn):
        conn.sendall(self.greeting.encode() + b"\r\n")
        if not self.greeting.startswith("220"):
            return
        while line := rfile.readline():
            text = line.decode().rstrip()
            verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
            text = verb + text[len(verb):]                  # smtplib sends 'mail FROM:'
            self.commands.append(text)
            if verb == "EHLO":
                lines = ["250-scripted", *[f"250-{e}" for e in self.extensions[:-1]], f"250 {self.extensions[-1]}"] \
                    if self.extensions else ["250 scripted"]
                conn.sendall("\r\n".join(lines).encode() + b"\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            elif verb == "DATA":
                conn.sendall(self.replies.get("DATA", "354 go").encode() + b"\r\n")
                if not self.replies.get("DATA", "354").startswith("354"):
                    continue
                raw = b""
                while not raw.endswith(b"\r\n.\r\n"):
                    chunk = rfile.readline()
                    if not chunk:
                        return
                    raw += chunk
                self.data.append(raw)
                conn.sendall(self.replies.get("END", "250 2.0.0 queued").encode() + b"\r\n")
            else:
                reply = self.replies.get(text, self.replies.get(verb, "250 2.0.0 ok"))
                conn.sendall(reply.encode() + b"\r\n")

    def close(self):
        self.sock.close()


@pytest.fixture
def make_cfg(tmp_path):
    def make(**smtp):
        values = {"connect_timeout": "3s", "command_timeout": "5s", "dns_timeout": "3s", **smtp}
        path = tmp_path / "mailsuite.conf"
        path.write_text("[mailsuite]\nhostname = mx.ours.test\nlog_socket =\n[smtp]\n" +
                        "".join(f"{k} = {v}\n" for k, v in values.items()))
        return config.load(str(path), required=True)
    return make


@pytest.fixture
def servers():
    started = []

    def start(address, port, **kwargs):
        server = ScriptedServer(address, port, **kwargs)
        started.append(server)
        return server
    yield start
    for server in started:
        server.close()


def deliver(cfg, recipients, message=b"Subject: t\n\nbody\n", sender="alice@ours.test"):
    return smtp_client.deliver_remote(cfg, sender, recipients, io.BytesIO(message))


def test_sends_crlf_and_dot_stuffs_whatever_the_file_holds(make_cfg, servers):
    port = free_port("127.0.0.1")
    server = servers("127.0.0.1", port)
    cfg = make_cfg(relayhost=f"127.0.0.1:{port}")
    [result] = deliver(cfg, ["bob@far.test"], b"Subject: t\n\n.dot\nbare\rcr\r\n..two\n.\nlast")
    assert result.status == "sent" and result.dsn == "2.0.0"
    assert result.relay == f"127.0.0.1[127.0.0.1]:{port}"
    assert server.data == [b"Subject: t\r\n\r\n..dot\r\nbare\r\ncr\r\n...two\r\n..\r\nlast\r\n.\r\n"]
    mail = next(c for c in server.commands if c.startswith("MAIL"))
    assert "SIZE=" in mail and "BODY=8BITMIME" in mail


def test_per_recipient_results(make_cfg, servers):
    port = free_port("127.0.0.1")
    servers("127.0.0.1", port, replies={"RCPT TO:<gone@far.test>": "550 5.1.1 no such user",
                                        "RCPT TO:<full@far.test>": "452 4.2.2 mailbox full"})
    cfg = make_cfg(relayhost=f"[127.0.0.1]:{port}")
    results = deliver(cfg, ["ok@far.test", "gone@far.test", "full@far.test"])
    assert [(r.recipient, r.status, r.dsn) for r in results] == [
        ("ok@far.test", "sent", "2.0.0"), ("gone@far.test", "bounced", "5.1.1"),
        ("full@far.test", "deferred", "4.2.2")]
    assert results[1].reply == "550 5.1.1 no such user"


@pytest.mark.parametrize("reply, status", [("451 4.3.0 try later", "deferred"), ("554 5.6.0 refused", "bounced")])
def test_reply_to_the_data(make_cfg, servers, reply, status):
    port = free_port("127.0.0.1")
    servers("127.0.0.1", port, replies={"END": reply})
    [result] = deliver(make_cfg(relayhost=f"127.0.0.1:{port}"), ["bob@far.test"])
    assert result.status == status


def test_unreachable_host_defers(make_cfg):
    port = free_port("127.0.0.1")
    [result] = deliver(make_cfg(relayhost=f"127.0.0.1:{port}"), ["bob@far.test"])
    assert result.status == "deferred" and result.dsn.startswith("4.")


def test_loop_by_received_count_bounces_without_connecting(make_cfg):
    message = b"Received: from x\n" * 51 + b"Subject: loop\n\nbody\n"
    [result] = deliver(make_cfg(relayhost="127.0.0.1:1"), ["bob@far.test"], message)
    assert (result.status, result.dsn) == ("bounced", "5.4.6")


def test_smtputf8_address_to_a_server_without_it_bounces(make_cfg, servers):
    port = free_port("127.0.0.1")
    servers("127.0.0.1", port)
    [result] = deliver(make_cfg(relayhost=f"127.0.0.1:{port}"), ["jörg@far.test"])
    assert (result.status, result.dsn) == ("bounced", "5.6.7")


def test_smtputf8_address_to_a_server_with_it_is_sent(make_cfg, servers):
    port = free_port("127.0.0.1")
    server = servers("127.0.0.1", port, extensions=("SIZE", "8BITMIME", "SMTPUTF8"))
    [result] = deliver(make_cfg(relayhost=f"127.0.0.1:{port}"), ["jörg@far.test"])
    assert result.status == "sent"
    assert any("SMTPUTF8" in c for c in server.commands if c.startswith("MAIL"))


# --- MX routing through dnsmasq --------------------------------------------

@pytest.fixture
def zone(tmp_path):
    dns = Dnsmasq(tmp_path,
                  mx=[("multi.test", "mx1.multi.test", 10), ("multi.test", "mx2.multi.test", 20),
                      ("tie.test", "t1.tie.test", 5), ("tie.test", "t2.tie.test", 5),
                      ("self.test", "mx.ours.test", 10), ("self.test", "worse.self.test", 20),
                      ("self.test", "better.self.test", 5),
                      ("bestself.test", "mx.ours.test", 1), ("bestself.test", "worse.self.test", 20)],
                  hosts=[("mx1.multi.test", "127.0.0.11"), ("mx2.multi.test", "127.0.0.12"),
                         ("t1.tie.test", "127.0.0.13"), ("t2.tie.test", "127.0.0.14"),
                         ("mx.ours.test", "127.0.0.15"), ("worse.self.test", "127.0.0.16"),
                         ("better.self.test", "127.0.0.17"), ("bare.test", "127.0.0.18")],
                  records=[("null.test", 15, "000000")])
    yield dns
    dns.stop()


def routed(cfg, domain):
    return [(h.name, h.preference, h.addresses) for h in mx.route(cfg, domain, ourselves={"mx.ours.test"})]


def test_mx_preference_order_and_implicit_mx(make_cfg, zone):
    cfg = make_cfg(dns_server="127.0.0.1", dns_port=zone.port)
    assert routed(cfg, "multi.test") == [("mx1.multi.test", 10, ["127.0.0.11"]), ("mx2.multi.test", 20, ["127.0.0.12"])]
    assert routed(cfg, "bare.test") == [("bare.test", 0, ["127.0.0.18"])]


def test_equal_preferences_are_shuffled(make_cfg, zone):
    cfg = make_cfg(dns_server="127.0.0.1", dns_port=zone.port)
    firsts = {routed(cfg, "tie.test")[0][0] for _ in range(40)}
    assert firsts == {"t1.tie.test", "t2.tie.test"}


def test_null_mx_and_nxdomain_are_permanent(make_cfg, zone):
    cfg = make_cfg(dns_server="127.0.0.1", dns_port=zone.port)
    with pytest.raises(mx.RouteError) as null:
        mx.route(cfg, "null.test")
    assert null.value.permanent and null.value.dsn == "5.1.10"
    with pytest.raises(mx.RouteError) as missing:
        mx.route(cfg, "missing.test")
    assert missing.value.permanent and missing.value.dsn == "5.1.2"


def test_never_an_mx_as_preferred_as_ourselves_or_worse(make_cfg, zone):
    cfg = make_cfg(dns_server="127.0.0.1", dns_port=zone.port)
    assert routed(cfg, "self.test") == [("better.self.test", 5, ["127.0.0.17"])]
    with pytest.raises(mx.RouteError) as loop:
        mx.route(cfg, "bestself.test", ourselves={"mx.ours.test"})
    assert loop.value.dsn == "5.4.6"


def test_next_mx_is_tried_when_the_first_defers(make_cfg, servers, zone):
    port = free_port("127.0.0.11", "127.0.0.12")
    servers("127.0.0.11", port, greeting="421 4.3.2 busy")
    second = servers("127.0.0.12", port)
    cfg = make_cfg(dns_server="127.0.0.1", dns_port=zone.port, remote_port=port)
    [result] = deliver(cfg, ["bob@multi.test"])
    assert result.status == "sent" and result.relay == f"mx2.multi.test[127.0.0.12]:{port}"
    assert len(second.data) == 1


def test_static_route_bypasses_dns(make_cfg, servers):
    port = free_port("127.0.0.1")
    server = servers("127.0.0.1", port)
    cfg = make_cfg(static_routes=f"routed.test=127.0.0.1:{port}", dns_server="127.0.0.1", dns_port=1)
    [result] = deliver(cfg, ["bob@routed.test"])
    assert result.status == "sent" and len(server.data) == 1
