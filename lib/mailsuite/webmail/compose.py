"""Writing mail from the webmail: the drafts of reply, reply-all and forward, the message, submission.

A message leaves through the submission server (`[webmail] smtp_server`,
ours or any other) with SMTP AUTH as the logged-in user, exactly as a
desktop client would send it: the webmail holds no privilege of its own
and never writes to a queue or a spool.  A copy goes to the Sent folder
over IMAP afterwards.
"""

import email.message
import email.policy
import email.utils
import mimetypes
import smtplib
import ssl
from dataclasses import dataclass, field

from .message_view import header, parse, quoted_body


class SendError(Exception):
    pass


@dataclass
class Draft:
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    forward_uid: str = ""            # whose attachments go along, from the same folder
    reply_uid: str = ""              # flagged \\Answered once the reply is sent
    attachments: list = field(default_factory=list)


def addresses(text):
    """[address] from a To:/Cc: field as typed: commas, names and angle brackets allowed."""
    return [address for _, address in email.utils.getaddresses([text or ""]) if "@" in address]


def _prefixed(prefix, subject):
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}".strip()


def reply(raw, me, *, everyone=False):
    original = parse(raw)
    sender = header(original, "Reply-To") or header(original, "From")
    to = [sender]
    cc = []
    if everyone:
        mine = {me.lower()}
        taken = {a.lower() for a in addresses(sender)} | mine
        for value in (header(original, "To"), header(original, "Cc")):
            for name, address in email.utils.getaddresses([value]):
                if address and address.lower() not in taken:
                    cc.append(email.utils.formataddr((name, address)))
                    taken.add(address.lower())
    message_id = header(original, "Message-ID")
    quoted = "\n".join("> " + line for line in quoted_body(raw).splitlines())
    return Draft(to=", ".join(to), cc=", ".join(cc), subject=_prefixed("Re:", header(original, "Subject")),
                 body=f"\n\nOn {header(original, 'Date')}, {header(original, 'From')} wrote:\n{quoted}\n",
                 in_reply_to=message_id,
                 references=" ".join(filter(None, [header(original, "References"), message_id])))


def forward(raw, uid):
    original = parse(raw)
    lines = ["", "", "-------- Forwarded message --------"]
    for name in ("Subject", "Date", "From", "To", "Cc"):
        value = header(original, name)
        if value:
            lines.append(f"{name}: {value}")
    lines += ["", quoted_body(raw)]
    return Draft(subject=_prefixed("Fwd:", header(original, "Subject")), body="\n".join(lines), forward_uid=str(uid))


def build(draft, sender, domain, forwarded=()):
    """The EmailMessage for DRAFT from SENDER; FORWARDED are (filename, type, bytes) carried over."""
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    for name, value in (("To", draft.to), ("Cc", draft.cc)):
        if value.strip():
            message[name] = value
    message["Subject"] = draft.subject
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    if draft.in_reply_to:
        message["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        message["References"] = draft.references
    message["User-Agent"] = "mailsuite webmail"
    message.set_content(draft.body.replace("\r\n", "\n"))
    for filename, kind, data in list(forwarded) + list(draft.attachments):
        kind = kind if kind and "/" in kind and kind != "application/octet-stream" else (
            mimetypes.guess_type(filename)[0] or "application/octet-stream")
        maintype, subtype = kind.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def recipients(draft):
    found = addresses(draft.to) + addresses(draft.cc) + addresses(draft.bcc)
    return list(dict.fromkeys(found))


def submit(message, envelope_from, to, *, host, port, security, ca_file, user, password, timeout=60):
    """Send MESSAGE with AUTH as USER; raises SendError with the server's words."""
    context = ssl.create_default_context(cafile=ca_file or None)
    try:
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            smtp.login(user, password)
            refused = smtp.send_message(message, from_addr=envelope_from, to_addrs=to)
    except smtplib.SMTPAuthenticationError as exc:
        raise SendError(f"the submission server refused the login: {exc.smtp_error.decode(errors='replace')}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise SendError("every recipient was refused: " + ", ".join(exc.recipients)) from None
    except smtplib.SMTPResponseException as exc:
        raise SendError(f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SendError(f"cannot send through {host}:{port}: {exc}") from None
    if refused:
        raise SendError("refused: " + ", ".join(refused))
