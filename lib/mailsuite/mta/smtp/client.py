"""Remote delivery: hand a queued message to the next SMTP hop.

`deliver_remote()` is called by the queue runner with one message and its
remote recipients and answers with one `RecipientResult` per recipient:
`sent`, `deferred` (4xx, no answer, DNS trouble: the runner retries later)
or `bounced` (5xx, null MX, mail loop: the runner sends a DSN).

Per domain it asks `mx.route()` for the hosts to try (or uses the
`relayhost` smarthost for everything) and tries each in turn until one
gives a final answer.  It speaks ESMTP through the standard library's
smtplib, with opportunistic STARTTLS (no certificate check: it only guards
against passive listeners, as Postfix's `may` level), SIZE and 8BITMIME,
and streams the body itself so that only CRLF line ends leave this host and
every line that starts with a dot is doubled, whatever line ends the queue
file has: a bare CR or LF can never reach the peer and end the data early.

A message that already carries more `Received:` headers than `max_hops`
is looping and bounces without being sent.
"""

import contextlib
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, replace

from ...core import hostport
from . import mx

CHUNK = 64 * 1024


@dataclass
class RecipientResult:
    """What happened to one recipient on this attempt."""

    recipient: str
    status: str        # 'sent' | 'deferred' | 'bounced'
    dsn: str           # enhanced status code, '2.0.0'
    reply: str         # the remote reply or our own reason, one line
    relay: str         # 'mx.example.org[192.0.2.1]:25' or 'none'
    setup: float = 0.0     # seconds to connect, greet, EHLO and STARTTLS (Postfix's delays "c")
    transfer: float = 0.0  # seconds from MAIL to the reply after DATA ("d")


class _HostFailure(Exception):
    """The current host gave no final answer for the whole transaction: try the next."""


class _TlsFailed(Exception):
    """The STARTTLS handshake failed: the same host is tried again without TLS."""


def deliver_remote(cfg, sender, recipients, message_file, *, on_result=None):
    """Try to send MESSAGE_FILE (a path or binary file; LF or CRLF) to RECIPIENTS.

    Never raises for delivery problems: each recipient gets a result, with
    the time its connection and its transfer took.  ON_RESULT(result)
    hears of each as soon as its domain is done, so the caller can record
    (and log) it before the next, perhaps slow, domain is tried."""
    results = []

    def done(group_results):
        for result in group_results:
            if on_result is not None:
                on_result(result)
        results.extend(group_results)

    with _open(message_file) as message:
        hops = count_received(message)
        if hops > cfg.smtp.max_hops:
            done([RecipientResult(r, "bounced", "5.4.6", f"mail forwarding loop ({hops} Received: headers)",
                                  "none") for r in recipients])
        else:
            for domain, group in _by_domain(cfg, recipients).items():
                done(_deliver_domain(cfg, domain, sender, group, message))
    return results


def _open(message_file):
    """The caller's file as it is (left open), or the named file."""
    if hasattr(message_file, "read"):
        return contextlib.nullcontext(message_file)
    return open(message_file, "rb")


def count_received(message):
    """Number of Received: headers in the message's header section."""
    message.seek(0)
    count = 0
    for line in message:
        if line in (b"\n", b"\r\n"):
            break
        if line[:9].lower() == b"received:":
            count += 1
    message.seek(0)
    return count


def _by_domain(cfg, recipients):
    """Recipients grouped by next hop: one group when a relayhost is set."""
    groups = {}
    for rcpt in recipients:
        domain = "" if cfg.smtp.relayhost else rcpt.rpartition("@")[2].lower()
        groups.setdefault(domain, []).append(rcpt)
    return groups


def _hosts(cfg, domain):
    """The hosts to try for DOMAIN ('' = the relayhost)."""
    fixed = mx.parse_hostport(cfg.smtp.relayhost, cfg.smtp.remote_port, "[smtp] relayhost") if not domain \
        else mx.static_route(cfg, domain)
    if fixed:
        fixed.addresses = _system_addresses(fixed.name, fixed.port)
        if not fixed.addresses:
            raise mx.RouteError("4.4.4", f"cannot resolve {fixed.name}", permanent=False)
        return [fixed]
    return mx.route(cfg, domain, ourselves=_ourselves(cfg))


def _system_addresses(name, port):
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def _ourselves(cfg):
    """Names and addresses that mean this host, for MX loop detection."""
    names = {cfg.hostname.lower()}
    for item in cfg.smtp.listen:
        try:
            host, _ = hostport.listen_address(item, 25)
        except hostport.HostPortError:
            continue                    # the daemon refuses to start on it anyway
        if host not in ("0.0.0.0", "::"):
            names.add(host.lower())
    return names


def _deliver_domain(cfg, domain, sender, recipients, message):
    """Results for RECIPIENTS of one next hop, trying each host in turn."""
    try:
        hosts = _hosts(cfg, domain)
    except mx.RouteError as exc:
        status = "bounced" if exc.permanent else "deferred"
        return [RecipientResult(r, status, exc.dsn, str(exc), "none") for r in recipients]
    last = ("4.4.1", "no host answered", "none")
    for host in hosts:
        for address in host.addresses:
            relay = f"{host.name}[{address}]:{host.port}"
            try:
                try:
                    return _transaction(cfg, address, host.port, relay, sender, recipients, message, tls=True)
                except _TlsFailed:          # as Postfix does: the same host again, in clear text
                    return _transaction(cfg, address, host.port, relay, sender, recipients, message, tls=False)
            except _HostFailure as exc:
                last = (exc.args[0], exc.args[1], relay)
    dsn, reply, relay = last
    return [RecipientResult(r, "deferred", dsn, reply, relay) for r in recipients]


def _final_or_next(code, reply, relay, recipients):
    """A 5xx is final for everyone; anything else means try the next host."""
    text = _one_line(code, reply)
    if 500 <= code <= 599:
        return [RecipientResult(r, "bounced", _dsn(code, reply), text, relay) for r in recipients]
    raise _HostFailure(_dsn(code, reply), text)


def _transaction(cfg, address, port, relay, sender, recipients, message, *, tls):
    """One SMTP session with one host: results, or _HostFailure to try the next."""
    started = time.monotonic()
    try:
        client = smtplib.SMTP(timeout=cfg.smtp.connect_timeout, local_hostname=cfg.hostname)
        code, reply = client.connect(address, port)
    except (OSError, smtplib.SMTPException) as exc:
        raise _HostFailure("4.4.1", f"connect to {relay}: {_reason(exc)}") from None
    try:
        client.sock.settimeout(cfg.smtp.command_timeout)
        if code != 220:
            return _final_or_next(code, reply, relay, recipients)
        code, reply = client.ehlo()
        if code != 250:
            code, reply = client.helo()
            if code != 250:
                return _final_or_next(code, reply, relay, recipients)
        if tls and cfg.smtp.client_tls and client.has_extn("starttls"):
            _starttls(client, relay)
        ready = time.monotonic()
        results = _send(client, relay, sender, recipients, message)
        finished = time.monotonic()
        return [replace(r, setup=ready - started, transfer=finished - ready) for r in results]
    except (OSError, smtplib.SMTPException) as exc:
        raise _HostFailure("4.4.2", f"lost connection with {relay}: {_reason(exc)}") from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _starttls(client, relay):
    """Opportunistic TLS: encryption without certificate checks; a failed handshake means retry without."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        code, _ = client.starttls(context=context)
    except ssl.SSLError as exc:
        raise _TlsFailed(f"TLS handshake with {relay} failed: {exc.reason or _reason(exc)}") from None
    if code == 220:
        client.ehlo()


def _send(client, relay, sender, recipients, message):
    """MAIL, RCPT per recipient, DATA with the streamed body."""
    size = message.seek(0, 2)
    message.seek(0)
    options = []
    if client.has_extn("size"):
        options.append(f"SIZE={size}")
    if client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not all(address.isascii() for address in [sender, *recipients]):
        if not client.has_extn("smtputf8"):
            return [RecipientResult(r, "bounced", "5.6.7", f"{relay} does not support SMTPUTF8 addresses", relay)
                    for r in recipients]
        options.append("SMTPUTF8")
    code, reply = client.mail(sender, options)
    if code != 250:
        return _final_or_next(code, reply, relay, recipients)
    results, accepted = {}, []
    for rcpt in recipients:
        code, reply = client.rcpt(rcpt)
        if code in (250, 251):
            accepted.append(rcpt)
        else:
            status = "bounced" if code >= 500 else "deferred"
            results[rcpt] = RecipientResult(rcpt, status, _dsn(code, reply), _one_line(code, reply), relay)
    if accepted:
        code, reply = client.docmd("DATA")
        if code != 354:
            status = "bounced" if code >= 500 else "deferred"
        else:
            for piece in wire_lines(message):
                client.sock.sendall(piece)
            code, reply = client.getreply()
            status = "sent" if code == 250 else "bounced" if code >= 500 else "deferred"
        for rcpt in accepted:
            results[rcpt] = RecipientResult(rcpt, status, _dsn(code, reply), _one_line(code, reply), relay)
    return [results[r] for r in recipients]


def wire_lines(message):
    """The message as DATA content: CRLF line ends, dot-stuffed, then '.' CRLF.

    Any CR or LF that is not part of a CRLF pair becomes a line end of its
    own, so what the peer sees as lines is exactly what we see as lines."""
    pending = b""
    while chunk := message.read(CHUNK):
        pending += chunk
        held = b"\r" if pending.endswith(b"\r") else b""   # may be half of a CRLF
        lines = pending[:len(pending) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        pending = lines.pop() + held
        yield b"".join(_stuffed(line) for line in lines)
    if pending.rstrip(b"\r"):
        yield _stuffed(pending.rstrip(b"\r"))
    yield b".\r\n"


def _stuffed(line):
    return (b"." + line if line.startswith(b".") else line) + b"\r\n"


def _reason(exc):
    """What went wrong, in words: 'Connection refused', never '[Errno 111] Connection refused'."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError) or isinstance(exc, socket.timeout):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__


def _one_line(code, reply):
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} " + " ".join(text.split())


def _dsn(code, reply):
    """The enhanced status code from the reply, or one made from the basic code."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    first = text.split(None, 1)[0] if text.split() else ""
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] == str(code)[0]:
        return first
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")
