"""The webmail's side of IMAP: imaplib, spoken to any IMAP4rev1 server, never to the spool.

Everything the pages need is one or two commands, and none of them asks
for more than a page: a mailbox page in date order is a sequence range
(`FETCH N-49:N`), since messages are numbered in arrival order; the other
orders use SORT where the server has it, else one fetch of the sort key
for the whole mailbox, which the caller caches (see mailbox_order.py).
Mailbox names travel in modified UTF-7 (RFC 3501 5.1.3) and are shown
decoded.
"""

import email
import email.policy
import email.utils
import imaplib
import re
import socket
import ssl
from dataclasses import dataclass

from ..core import mutf7

HEADER_FIELDS = "FROM TO CC SUBJECT DATE"


class ImapError(Exception):
    """The server said NO or BAD, or went away; the message is its text."""


class LoginFailed(ImapError):
    pass


@dataclass
class Summary:
    """One line of a mailbox page."""

    uid: int
    seq: int = 0
    flags: tuple = ()
    size: int = 0
    sender: str = ""
    to: str = ""
    subject: str = ""
    date: str = ""

    @property
    def seen(self):
        return "\\Seen" in self.flags

    @property
    def flagged(self):
        return "\\Flagged" in self.flags


@dataclass
class Selected:
    name: str
    exists: int
    uidvalidity: int
    uidnext: int = 0
    read_only: bool = False
    generation: int = 0             # bumped at every EXISTS or EXPUNGE seen: cached orders are stale


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- responses ---

_FETCH_ITEM = re.compile(rb"(\d+) \((.*)", re.S)


def _fetch_items(data):
    """[(seq, {UID, FLAGS, RFC822.SIZE, INTERNALDATE, BODY: bytes})] from imaplib's FETCH data."""
    out = []
    for item in data:
        if isinstance(item, tuple):
            prefix, literal = item
        elif isinstance(item, bytes) and item != b")":
            prefix, literal = item, None
        else:
            continue
        m = _FETCH_ITEM.match(prefix)
        if not m:
            continue
        text = m.group(2)
        values = {}
        for name in (rb"UID", rb"RFC822\.SIZE"):
            found = re.search(rb"\b" + name + rb" (\d+)", text)
            if found:
                values[name.decode().replace("\\", "")] = int(found.group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", text)
        if flags:
            values["FLAGS"] = tuple(flags.group(1).decode("ascii", "replace").split())
        if literal is not None:
            values["BODY"] = literal
        out.append((int(m.group(1)), values))
    return out


def _header_summary(seq, values):
    raw = values.get("BODY", b"")
    header = email.message_from_bytes(raw, policy=email.policy.default)

    def field(name):
        try:
            return str(header.get(name, "") or "")
        except (ValueError, TypeError, IndexError):             # a broken encoded word: show it raw
            return raw.decode("utf-8", "replace")
    return Summary(uid=values.get("UID", 0), seq=seq, flags=values.get("FLAGS", ()),
                   size=values.get("RFC822.SIZE", 0), sender=field("From"), to=field("To"),
                   subject=field("Subject"), date=field("Date"))


class MailClient:
    """One IMAP connection as one user; raises ImapError for every refusal."""

    def __init__(self, host, port, *, security="none", ca_file="", timeout=30):
        try:
            if security == "tls":
                self.imap = imaplib.IMAP4_SSL(host, port, ssl_context=self._context(ca_file), timeout=timeout)
            else:
                self.imap = imaplib.IMAP4(host, port, timeout=timeout)
                if security == "starttls":
                    self.imap.starttls(ssl_context=self._context(ca_file))
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise ImapError(f"cannot reach the IMAP server {host}:{port}: {exc}") from None
        self.selected = None

    @staticmethod
    def _context(ca_file):
        return ssl.create_default_context(cafile=ca_file or None)

    def _run(self, name, *args):
        try:
            typ, data = getattr(self.imap, name)(*args)
        except (imaplib.IMAP4.abort, OSError, socket.timeout) as exc:
            raise ImapError(f"IMAP connection lost: {exc}") from None
        except imaplib.IMAP4.error as exc:
            raise ImapError(str(exc)) from None
        if typ != "OK":
            raise ImapError(b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace"))
        return data

    def _uid(self, command, *args):
        return self._run("uid", command, *args)

    @property
    def capabilities(self):
        return set(self.imap.capabilities)

    def login(self, user, password):
        try:
            typ, _ = self.imap.login(user, password)
        except imaplib.IMAP4.abort as exc:
            raise ImapError(f"IMAP connection lost: {exc}") from None
        except imaplib.IMAP4.error as exc:
            raise LoginFailed(str(exc)) from None
        if typ != "OK":
            raise LoginFailed("login refused")
        try:                                          # servers offer more once logged in (MOVE, SORT, UIDPLUS)
            self.imap.capabilities = tuple(self._run("capability")[0].decode().upper().split())
        except ImapError:
            pass

    def logout(self):
        try:
            self.imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass

    def alive(self):
        try:
            return self.imap.noop()[0] == "OK"
        except (imaplib.IMAP4.error, OSError):
            return False

    # --- folders ---

    def folders(self):
        """[(encoded name, shown name, flags)] sorted with INBOX first."""
        out = []
        for line in self._run("list", '""', '"*"'):
            if not isinstance(line, bytes):
                continue
            m = re.match(rb'\(([^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (.*)$', line)
            if not m:
                continue
            flags = tuple(m.group(1).decode().split())
            name = m.group(2).decode("utf-8", "replace")
            if name.startswith('"'):
                name = re.sub(r'\\(.)', r'\1', name[1:-1])
            if "\\Noselect" in flags or "\\NonExistent" in flags:
                continue
            out.append((name, mutf7.for_display(name), flags))
        out.sort(key=lambda f: (f[0].upper() != "INBOX", f[1].lower()))
        return out

    def status(self, name):
        """(messages, unseen) of mailbox NAME."""
        data = self._run("status", quote(name), "(MESSAGES UNSEEN)")
        text = data[0].decode("utf-8", "replace") if data and isinstance(data[0], bytes) else ""
        messages = re.search(r"MESSAGES (\d+)", text)
        unseen = re.search(r"UNSEEN (\d+)", text)
        return int(messages.group(1)) if messages else 0, int(unseen.group(1)) if unseen else 0

    def create(self, name):
        self._run("create", quote(name))

    # --- the selected mailbox ---

    def select(self, name):
        """Select NAME (or look for news in it when it already is): a Selected."""
        if self.selected and self.selected.name == name:
            self._run("noop")
            responses = self.imap.untagged_responses
            if "EXISTS" in responses or "EXPUNGE" in responses:
                self.selected.generation += 1
            if "EXISTS" in responses:
                self.selected.exists = int(responses["EXISTS"][-1])
            responses.clear()
            return self.selected
        self.selected = None
        data = self._run("select", quote(name))
        responses = self.imap.untagged_responses
        uidvalidity = int((responses.get("UIDVALIDITY") or [b"0"])[-1])
        uidnext = int((responses.get("UIDNEXT") or [b"0"])[-1])
        self.selected = Selected(name, int(data[-1] or 0), uidvalidity, uidnext,
                                 read_only="READ-ONLY" in responses)
        responses.clear()
        return self.selected

    def page_by_sequence(self, first, last):
        """Summaries of messages FIRST..LAST (sequence numbers), newest first."""
        if last < first or last < 1:
            return []
        data = self._run("fetch", f"{max(first, 1)}:{last}",
                         f"(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])")
        summaries = [_header_summary(seq, values) for seq, values in _fetch_items(data)]
        return sorted(summaries, key=lambda s: -s.seq)

    def summaries(self, uids):
        """Summaries of UIDS, in the order given."""
        if not uids:
            return []
        data = self._uid("fetch", ",".join(map(str, uids)),
                         f"(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])")
        found = {s.uid: s for s in (_header_summary(seq, v) for seq, v in _fetch_items(data))}
        return [found[u] for u in uids if u in found]

    def _criteria(self, criteria):
        """(charset, arguments) for SEARCH or SORT: ("ALL",) or (KEY, text), non-ASCII text as a literal."""
        if len(criteria) != 2:
            return None, criteria or ("ALL",)
        key, text = criteria
        if text.isascii() and "\n" not in text and "\r" not in text:
            return None, (key, quote(text))
        self.imap.literal = text.encode("utf-8")
        return "UTF-8", (key,)

    def search(self, *criteria):
        """UIDs matching CRITERIA ("ALL", or a key and its text), ascending."""
        charset, args = self._criteria(criteria)
        data = self._uid("search", *(("CHARSET", charset) if charset else ()), *args)
        return sorted(int(n) for n in b" ".join(d for d in data if d).split())

    def sort(self, key, *criteria):
        """UIDs in the server's SORT order (RFC 5256); only when 'SORT' is in capabilities."""
        charset, args = self._criteria(criteria)
        data = self._uid("sort", f"({key})", charset or "UTF-8", *args)
        return [int(n) for n in b" ".join(d for d in data if d).split()]

    def sort_keys(self, field):
        """{uid: key} of every message for FIELD (SIZE, FROM, SUBJECT): the costly fallback without SORT."""
        if field == "SIZE":
            data = self._run("fetch", "1:*", "(UID RFC822.SIZE)")
            return {v["UID"]: v.get("RFC822.SIZE", 0) for _, v in _fetch_items(data)}
        data = self._run("fetch", "1:*", f"(UID BODY.PEEK[HEADER.FIELDS ({field})])")
        out = {}
        for seq, values in _fetch_items(data):
            summary = _header_summary(seq, values)
            text = summary.sender if field == "FROM" else summary.subject
            out[values["UID"]] = sort_text(text, field)
        return out

    def message(self, uid):
        """The whole message UID as bytes; None when it is gone."""
        return self.message_and_flags(uid)[0]

    def message_and_flags(self, uid):
        """(bytes, flags) of message UID; (None, ()) when it is gone."""
        data = self._uid("fetch", str(uid), "(UID FLAGS BODY.PEEK[])")
        for _, values in _fetch_items(data):
            if values.get("UID") == uid and "BODY" in values:
                return values["BODY"], values.get("FLAGS", ())
        return None, ()

    def set_flags(self, uids, flags, add=True):
        if uids:
            self._uid("store", ",".join(map(str, uids)), "+FLAGS.SILENT" if add else "-FLAGS.SILENT",
                      f"({' '.join(flags)})")

    def move(self, uids, target):
        """Move UIDS to TARGET: MOVE (RFC 6851) where offered, else COPY, flag deleted, expunge."""
        if not uids:
            return
        ids = ",".join(map(str, uids))
        if "MOVE" in self.capabilities:
            self._uid("move", ids, quote(target))
            return
        self._uid("copy", ids, quote(target))
        self.expunge(uids)

    def expunge(self, uids):
        ids = ",".join(map(str, uids))
        self._uid("store", ids, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            self._uid("expunge", ids)
        else:
            self._run("expunge")
        self.imap.untagged_responses.clear()
        if self.selected:
            self.selected.exists = max(0, self.selected.exists - len(uids))

    def append(self, folder, message, flags=("\\Seen",)):
        self._run("append", quote(folder), f"({' '.join(flags)})", None, message)


def sort_text(text, field):
    """The sort key of a From: or Subject: (RFC 5256: base subject, without Re:/Fwd:, case-folded)."""
    text = (text or "").strip()
    if field == "SUBJECT":
        while True:
            stripped = re.sub(r"^\s*(?:re|fwd?|aw|sv)\s*(?:\[\d+\])?\s*:\s*", "", text, flags=re.I)
            if stripped == text:
                break
            text = stripped
    elif field == "FROM":
        address = email.utils.parseaddr(text)
        text = address[1] or text
    return text.casefold()
