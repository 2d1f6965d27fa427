"""Delivery status notifications (RFC 3464): bounces and success reports.

A notification is a multipart/report with three parts: a note for people,
the machine-readable message/delivery-status (one block per recipient:
Final-Recipient, Action, Status, Diagnostic-Code...), and the original
message's header (text/rfc822-headers), or the whole message when the
sender asked for RET=FULL.  It is sent from the null sender, so it can
never cause another bounce; what cannot be returned goes to the postmaster.
"""

import email.utils
import secrets
import time
from dataclasses import dataclass

from ..core.headers import read_header
from ..core.log import quote

FULL_RETURN_LIMIT = 10 << 20
MAX_DIAGNOSTIC = 1000


@dataclass
class Notice:
    """One recipient's line in a notification."""

    recipient: str
    action: str          # failed | delivered | relayed | delayed
    status: str          # 5.1.1
    diagnostic: str      # the remote reply or our reason
    remote_mta: str = ""
    original: str = ""   # ORCPT, "rfc822;a@b"


INTRO = {
    "failed": ("Undelivered Mail Returned to Sender",
               "I'm sorry to have to inform you that your message could not\n"
               "be delivered to one or more recipients. It's attached below.\n"),
    "delivered": ("Successful Mail Delivery Report",
                  "Your message was successfully delivered to the destination(s)\n"
                  "listed below.\n"),
    "delayed": ("Delayed Mail (still being retried)",
                "Your message could not be delivered yet to the recipients below;\n"
                "delivery will be retried.\n"),
}


def build(cfg, envelope, notices, message, *, to, action="failed", now=None):
    """The notification as bytes (LF line ends), addressed to TO.

    MESSAGE is the original as a seekable binary file."""
    now = now or time.time()
    host = cfg.hostname
    boundary = f"{envelope.id}.{secrets.token_hex(8)}/{host}"
    subject, intro = INTRO[action]
    date = email.utils.formatdate(now, localtime=True)
    out = [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}.{secrets.token_hex(6)}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {host}.",
        "",
        intro,
    ]
    for notice in notices:
        out.append(f"<{notice.recipient}>: {_one_line(notice.diagnostic)}")
    out += ["", f"--{boundary}",
            "Content-Description: Delivery report",
            "Content-Type: message/delivery-status",
            "",
            f"Reporting-MTA: dns; {host}",
            f"X-Mailsuite-Queue-ID: {envelope.id}"]
    if envelope.dsn.get("envid"):
        out.append(f"Original-Envelope-Id: {_xtext(envelope.dsn['envid'])}")
    out.append(f"Arrival-Date: {email.utils.formatdate(envelope.arrival, localtime=True)}")
    for notice in notices:
        out.append("")
        out.append(f"Final-Recipient: rfc822; {notice.recipient}")
        if notice.original:
            out.append(f"Original-Recipient: {notice.original}")
        out.append(f"Action: {notice.action}")
        out.append(f"Status: {notice.status}")
        if notice.remote_mta and notice.remote_mta not in ("none", "local", "file", "command"):
            out.append(f"Remote-MTA: dns; {notice.remote_mta}")
        kind = "smtp" if notice.diagnostic[:3].isdigit() else "x-unix"
        out.append(f"Diagnostic-Code: {kind}; {_one_line(notice.diagnostic)}")
        if action != "delivered":
            out.append(f"Last-Attempt-Date: {date}")
    out.append("")
    text = "\n".join(out).encode("utf-8", "replace") + b"\n"
    return text + _returned_part(envelope, message, boundary) + f"\n--{boundary}--\n".encode()


def _returned_part(envelope, message, boundary):
    message.seek(0)
    if envelope.dsn.get("ret", "").upper() == "FULL" and envelope.size <= FULL_RETURN_LIMIT:
        body = message.read()
        return (f"--{boundary}\nContent-Description: Undelivered Message\n"
                f"Content-Type: message/rfc822\n\n").encode() + body.rstrip(b"\n") + b"\n"
    header, _rest = read_header(message)
    return (f"--{boundary}\nContent-Description: Undelivered Message Headers\n"
            f"Content-Type: text/rfc822-headers\n\n").encode() + header.to_bytes()


def _one_line(text):
    """A diagnostic (a remote reply, a command's words) as one clean, bounded line."""
    line = quote(" ".join(str(text).split()))
    return line if len(line) <= MAX_DIAGNOSTIC else line[:MAX_DIAGNOSTIC - 3] + "..."


def _xtext(text):
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in text)
