"""Turning what the user typed into an RFC 5322 message and handing it over.

A `Draft` is the message under composition: addresses as typed, subject,
body text, attachment paths.  `build()` makes the wire form with Python's
`email` package, which already knows the standards: non-ASCII headers as
RFC 2047 encoded-words, a UTF-8 body as 7bit when it is plain ASCII, else
quoted-printable or base64 (whichever is shorter, so mostly-ASCII text
stays readable in the raw), attachments as multipart/mixed parts in base64
with a type guessed from the file name.  Bcc never appears in the headers;
its addresses only reach sendmail's argument list, after a `--` so an
address can never be read as an option, and never through a shell.
"""

import email.policy
import email.utils
import mimetypes
import os
import subprocess
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from ..core import address

# LF line ends (sendmail -oi reads them), 78-column folding, RFC 2047 for non-ASCII.
POLICY = email.policy.default.clone(linesep="\n", cte_type="7bit")


class SendError(Exception):
    """sendmail refused the message or could not be run; the text says why."""


class DraftError(ValueError):
    """A header field the user gave cannot go into a message (a line break smuggling a header)."""


@dataclass
class Draft:
    to: list = field(default_factory=list)
    cc: list = field(default_factory=list)
    bcc: list = field(default_factory=list)
    subject: str = ""
    body: str = ""
    attachments: list = field(default_factory=list)
    from_addr: str = ""
    in_reply_to: str = ""
    references: str = ""

    def recipients(self):
        """Every envelope recipient (To, Cc, Bcc), bare addresses, duplicates dropped."""
        pairs = email.utils.getaddresses(self.to + self.cc + self.bcc)
        return list(dict.fromkeys(addr for _name, addr in pairs if addr))


def split_addresses(text):
    """'a@b, "Doe, J" <j@d>' -> ['a@b', '"Doe, J" <j@d>'] (commas inside quotes kept)."""
    out, word, quoted, angle = [], [], False, 0
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angle += 1
        elif char == ">" and not quoted:
            angle = max(0, angle - 1)
        if char == "," and not quoted and not angle:
            out.append("".join(word))
            word = []
        else:
            word.append(char)
    out.append("".join(word))
    return [w.strip() for w in out if w.strip()]


def check(draft):
    """Raise DraftError if a header field holds a control character such as a line break."""
    fields = [("Subject", draft.subject), ("From", draft.from_addr)]
    fields += [(name, value) for name, values in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc))
               for value in values]
    for name, value in fields:
        if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in value):
            raise DraftError(f"{name}: control characters (line breaks) are not allowed: {value!r}")
    for name, values in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc)):
        for value in values:
            if not address.valid(_addr_spec(value)):
                raise DraftError(f"{name}: {value!r} is not a mail address")


def _addr_spec(text):
    """The address of 'Name <addr>' or of a bare 'addr', unparsed (getaddresses would 'repair' a@@b)."""
    text = text.strip()
    if text.endswith(">") and "<" in text:
        return text[text.rindex("<") + 1:-1].strip()
    return text


def build(draft, *, message_id_domain, date=None):
    """The message as bytes with LF line ends, ready for sendmail and for ~/dead.letter."""
    check(draft)
    msg = EmailMessage(policy=POLICY)
    if draft.from_addr:
        msg["From"] = draft.from_addr
    for name, values in (("To", draft.to), ("Cc", draft.cc)):
        if values:
            msg[name] = ", ".join(values)
    msg["Subject"] = draft.subject
    msg["Date"] = email.utils.format_datetime(date or email.utils.localtime())
    msg["Message-ID"] = email.utils.make_msgid(domain=message_id_domain)
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = draft.references
    _set_text(msg, draft.body)
    for path in draft.attachments:
        attach_file(msg, path)
    return msg.as_bytes(policy=POLICY)


def _set_text(msg, text):
    if text and not text.endswith("\n"):
        text += "\n"
    if text.isascii():
        msg.set_content(text)               # 7bit, or quoted-printable if a line is too long
    else:
        msg.set_content(text, charset="utf-8", cte=text_transfer_encoding(text))


def text_transfer_encoding(text):
    """quoted-printable while at most a quarter of the characters are non-ASCII (legible raw), else base64."""
    foreign = sum(1 for char in text if ord(char) > 127)
    return "quoted-printable" if foreign * 4 <= len(text) else "base64"


def attach_file(msg, path):
    """Add PATH as a base64 part; the type comes from the name, octet-stream when unknown."""
    with open(path, "rb") as f:
        data = f.read()
    ctype, encoding = mimetypes.guess_type(path)
    if ctype is None or encoding is not None:   # .gz and friends: the bytes are opaque
        ctype = "application/octet-stream"
    maintype, subtype = ctype.split("/", 1)
    params = {}
    if maintype == "text":
        params["params"] = {"charset": _charset_of(data)}
        if params["params"]["charset"] is None:        # text in no charset we can name: ship it opaque
            maintype, subtype, params = "application", "octet-stream", {}
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=os.path.basename(path), **params)


def _charset_of(data):
    """us-ascii or utf-8 when DATA is that, else None: a reader must never have to guess."""
    for charset in ("us-ascii", "utf-8"):
        try:
            data.decode(charset)
            return charset
        except UnicodeDecodeError:
            continue
    return None


def default_from(user, domain):
    """'Alice Liddell <alice@example.org>' from the account's name and GECOS."""
    return str(Address(display_name=user.full_name, username=user.name, domain=domain))


def envelope_address(text):
    """The bare address of 'Name <addr>' (for sendmail -f)."""
    return email.utils.parseaddr(text)[1]


def sendmail(program, message, recipients, *, sender=None, config_path=None, verbose=False):
    """Pipe MESSAGE to `PROGRAM -oi [-v] [-f SENDER] -- RECIPIENTS...`; raise SendError on failure.

    VERBOSE (mail -v, `set verbose`) lets sendmail report the delivery on the terminal.

    CONFIG_PATH reaches a mailsuite sendmail through MAILSUITE_CONFIG (not -C,
    which other sendmails read differently), so `mail -C FILE` sends through
    the same installation it reads from.
    """
    if not recipients:
        raise SendError("no recipients")
    argv = [program, "-oi"]
    if verbose:
        argv.append("-v")
    if sender:
        argv += ["-f", sender]
    argv += ["--", *recipients]
    try:
        env = dict(os.environ, MAILSUITE_CONFIG=config_path) if config_path else None
        done = subprocess.run(argv, input=message, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE,
                              env=env)
    except OSError as exc:
        raise SendError(f"cannot run {program}: {exc.strerror}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit status {done.returncode}"
        raise SendError(f"{os.path.basename(program)} failed ({done.returncode}): {reason}")
