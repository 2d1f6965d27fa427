"""How a message travelled: its Received: lines read back into hops.

Every MTA that handles a message prepends a `Received:` line (RFC 5321
4.4): who it came from, who took it, with which protocol, under which
queue id, and when.  Read bottom up, they are the message's path; the
differences between their dates are the time it spent at each host, the
way Google's Messageheader tool shows "delivery delays, the approximate
source of a delay, and who may be responsible".

The grammar of RFC 5321 (`from X by Y via Z with P id I for A ; date`) is
only a starting point: Postfix, Sendmail, Exim, OpenSMTPD, Dovecot LMTP,
Exchange, Gmail and qmail each fill the clauses and comments in their own
way (TLS in a comment, the software in a comment after `by` or after
`with`, qmail's `(qmail 1234 invoked by uid 1000)` with no clause at
all).  The parser reads clauses and comments generically, then names the
software from what it recognises.  A line it cannot read is kept as a hop
marked unparsed, with its text: a trace never drops a line.

A delay is attributed to the host that held the message: the time between
hop N-1 and hop N is spent in the queue of hop N-1's receiver.  A negative
delay is clock skew between those two hosts, flagged and never hidden.
"""

import datetime
import email.parser
import email.policy
import email.utils
import ipaddress
import re
from dataclasses import dataclass, field

KEYWORDS = ("from", "by", "via", "with", "id", "for")


@dataclass
class Hop:
    """One Received: line, oldest first (index 1 is the first host that took the message)."""

    index: int
    text: str
    parsed: bool = True
    problem: str = ""
    from_host: str = ""           # the name the client gave (HELO) or its address
    from_name: str = ""           # the name the receiver found for the client's address
    from_ip: str = ""
    by_host: str = ""
    software: str = ""
    protocol: str = ""
    tls: str = ""                 # what the line says of TLS ("TLSv1.3 TLS_AES_256_GCM_SHA384", "yes"), "" = no sign
    id: str = ""
    recipient: str = ""
    time: object = None           # an aware datetime, or None
    delay: float | None = None    # seconds since the previous hop (or since Date: for the first)
    skew: bool = False            # delay < 0: the two hosts' clocks disagree

    @property
    def mta(self):
        """The software that wrote the line, as far as the line says."""
        return identify(self)

    def as_dict(self):
        return {
            "index": self.index, "parsed": self.parsed, "problem": self.problem, "text": self.text,
            "from": self.from_host, "from_name": self.from_name, "from_ip": self.from_ip,
            "by": self.by_host, "software": self.software, "mta": self.mta, "with": self.protocol,
            "tls": self.tls, "id": self.id, "for": self.recipient,
            "time": self.time.isoformat() if self.time else None,
            "delay": self.delay, "clock_skew": self.skew,
        }


@dataclass
class Trace:
    return_path: str = ""
    date: object = None           # the Date: header, aware datetime or None
    date_text: str = ""
    hops: list = field(default_factory=list)

    @property
    def total(self):
        """Seconds from Date: to the last hop with a date, or None."""
        last = next((h.time for h in reversed(self.hops) if h.time), None)
        if self.date and last:
            return (last - self.date).total_seconds()
        return None

    @property
    def slowest(self):
        """The hop with the longest delay (None when no two dates could be compared)."""
        timed = [h for h in self.hops if h.delay is not None]
        return max(timed, key=lambda h: h.delay, default=None)

    def holder(self, hop):
        """Who held the message during HOP's delay: the previous hop's receiver (the sender for the first)."""
        earlier = [h for h in self.hops if h.index < hop.index and h.by_host]
        if earlier:
            return earlier[-1].by_host
        return hop.from_name or hop.from_host or "the sender's mail program"

    def as_dict(self):
        slowest = self.slowest
        return {
            "return_path": self.return_path,
            "date": self.date.isoformat() if self.date else None,
            "date_text": self.date_text,
            "hops": [h.as_dict() for h in self.hops],
            "total": self.total,
            "slowest": None if slowest is None else {
                "index": slowest.index, "delay": slowest.delay, "held_by": self.holder(slowest),
                "run_by": organisation(self.holder(slowest))},
            "clock_skew": [h.index for h in self.hops if h.skew],
        }


# --- reading a message ----------------------------------------------------

def read_header(data):
    """The header section of DATA (bytes of a message, a header, or an mbox's first message)."""
    if data.startswith(b"From "):                     # an mbox From_ line is no header
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    data = data.replace(b"\r\n", b"\n")
    end = data.find(b"\n\n")
    return data if end < 0 else data[:end + 1]


def trace_message(data):
    """The Trace of a message given as bytes (whole message or header only)."""
    header = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(read_header(data))
    trace = Trace()
    trace.return_path = _unfold(header.get("Return-Path", "")).strip()
    trace.date_text = _unfold(header.get("Date", "")).strip()
    trace.date = parse_date(trace.date_text)
    lines = [_unfold(value) for value in header.get_all("Received", [])]
    for number, text in enumerate(reversed(lines), 1):
        trace.hops.append(parse_received(text, number))
    _measure(trace)
    return trace


def _unfold(value):
    if not isinstance(value, str):                    # an undecodable header comes back as a Header object
        value = str(value)
    return re.sub(r"\s+", " ", value).strip()


def _measure(trace):
    previous = trace.date
    for hop in trace.hops:
        if hop.time is None:
            continue
        if previous is not None:
            hop.delay = (hop.time - previous).total_seconds()
            hop.skew = hop.delay < 0
        previous = hop.time


def parse_date(text):
    """An aware datetime from an RFC 5322 date (qmail's too: no weekday), or None."""
    text = re.sub(r"\([^)]*\)", " ", text).strip()    # "(PST)", "(CET)"
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is not None and when.tzinfo is None:          # "-0000": UTC, origin unknown (RFC 5322 3.3)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


# --- one Received: line ---------------------------------------------------

def tokens(text):
    """Words and (nested) comments of a Received: line's clauses: [('word', w) | ('comment', c)]."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "(":
            depth, j = 1, i + 1
            while j < n and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            out.append(("comment", text[i + 1:j - 1 if depth == 0 else j].strip()))
            i = j
        elif c == "<":
            j = text.find(">", i)
            j = n if j < 0 else j + 1
            out.append(("word", text[i:j]))
            i = j
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "(<":
                j += 1
            out.append(("word", text[i:j]))
            i = j
    return out


def split_date(text):
    """(clauses, date text): the date follows the last ';' (RFC 5321)."""
    depth = 0
    cut = -1
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c == ";" and depth == 0:
            cut = i
    if cut < 0:
        return text, ""
    return text[:cut], text[cut + 1:].strip()


def clauses(text):
    """{keyword: (words, comments)} in order, plus the comments before the first keyword under ''."""
    found = {"": ([], [])}
    current = ""
    for kind, value in tokens(text):
        if kind == "word" and value.lower() in KEYWORDS and value.lower() not in found:
            current = value.lower()
            found[current] = ([], [])
        elif kind == "word":
            found[current][0].append(value)
        else:
            found[current][1].append(value)
    return found


def parse_received(text, index=0):
    """One Hop from the unfolded text of a Received: header."""
    hop = Hop(index=index, text=text)
    body, date = split_date(text)
    hop.time = parse_date(date)
    parts = clauses(body)
    words_before, comments_before = parts[""]
    if words_before and not any(k in parts for k in KEYWORDS):
        return _unparsed(hop, "no from/by clause")
    if "from" in parts:
        _read_from(hop, *parts["from"])
    if "by" in parts:
        words, comments = parts["by"]
        hop.by_host = words[0] if words else ""
        hop.software = next((c for c in comments if not _is_address(c)), "")
        for comment in comments:
            _read_tls(hop, comment)
    if "with" in parts:
        words, comments = parts["with"]
        hop.protocol = " ".join(words)
        for comment in comments:
            if not _read_tls(hop, comment) and not hop.software and not _is_address(comment):
                hop.software = comment
        _read_exim_tls(hop, words)
    if "id" in parts:
        words, comments = parts["id"]
        hop.id = words[0] if words else ""
        for comment in comments:
            _read_tls(hop, comment)
    if "for" in parts:
        words, comments = parts["for"]
        hop.recipient = words[0].strip("<>") if words else ""
        for comment in comments:                     # Gmail: for <x> (version=TLS1_3 cipher=...)
            _read_tls(hop, comment)
    for comment in comments_before:                  # qmail: (qmail 1234 invoked by uid 1000)
        if not hop.software:
            hop.software = comment
    if re.search(r"(?i)\b(ESMTPS|ESMTPSA|LMTPS|LMTPSA|UTF8SMTPS|UTF8SMTPSA|SMTPS|HTTPS)\b", hop.protocol) and not hop.tls:
        hop.tls = "yes"
    if not (hop.by_host or hop.from_host or hop.software):
        return _unparsed(hop, "no from/by clause")
    if hop.time is None:
        hop.problem = "no date" if not date else f"unreadable date: {date}"
    return hop


def _unparsed(hop, why):
    hop.parsed = False
    hop.problem = why
    return hop


def _read_from(hop, words, comments):
    hop.from_host = words[0] if words else ""
    if _is_address(hop.from_host):                   # from [192.0.2.1] (helo=name): Exim without a name
        hop.from_ip = hop.from_host.strip("[]").removeprefix("IPv6:")
    for comment in comments:
        if _read_tls(hop, comment):
            continue
        helo = re.search(r"(?i)\bhelo[= ]\s*(\S+)", comment)
        if helo:                                      # Exim: ([1.2.3.4] helo=name); qmail: (HELO name)
            if not hop.from_host or _is_address(hop.from_host) or hop.from_host == "unknown":
                hop.from_host = helo.group(1)
            if comment.lower().startswith("helo"):    # the name the client gave: no address of the receiver's
                continue
        address = _address_in(comment)
        if address and (not hop.from_ip or _is_address(hop.from_host)):
            hop.from_ip = address
            name = comment.split()[0] if comment.split() else ""
            if name and not _is_address(name) and "@" not in name:      # qmail: (ident@address)
                hop.from_name = name.rstrip(".")
        elif not hop.from_name and comment and not helo and re.fullmatch(r"[\w.-]+", comment):
            hop.from_name = comment


def _address_in(text):
    """The first IP address written in TEXT ([1.2.3.4], [IPv6:...], (1.2.3.4)), or ''."""
    for candidate in re.findall(r"\[?(?:IPv6:)?([0-9A-Fa-f:.]*[0-9A-Fa-f](?:%\w+)?)\]?", text):
        bare = candidate.split("%")[0]
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            continue
        if "." in bare or bare.count(":") >= 2:
            return bare
    return ""


def _is_address(text):
    return bool(text) and _address_in(text) == text.strip("[]()").removeprefix("IPv6:").split("%")[0]


TLS_COMMENTS = (
    re.compile(r"(?i)\busing (TLS\S*|SSL\S*) with cipher (\S+)"),          # Postfix
    re.compile(r"(?i)\bversion=(TLS\S*?),? cipher=(\S+?),?(?:\s|$)"),        # Sendmail, Exchange
    re.compile(r"(?i)^(TLSv?[\d.]+):([\w-]+)(?::\d+)?"),                    # OpenSMTPD, Exim 4.9x older
)


def _read_tls(hop, comment):
    """Record what COMMENT says of TLS; True when it was a TLS comment."""
    for pattern in TLS_COMMENTS:
        found = pattern.search(comment)
        if found:
            hop.tls = f"{found.group(1)} {found.group(2)}".rstrip(",")
            return True
    if re.fullmatch(r"(?i)TLS\s*1[._][0-3]|TLSv1\.[0-3]", comment.strip()):
        hop.tls = comment.strip()                 # Exim 4.96: with esmtps (TLS1.3) tls CIPHER
        return True
    if comment.strip() == "Google Transport Security":
        hop.tls = hop.tls or "yes"
        return True
    return False


def _read_exim_tls(hop, words):
    """Exim 4.96: `with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384` (the words after the protocol)."""
    lowered = [w.lower() for w in words]
    if "tls" in lowered[1:]:
        at = lowered.index("tls", 1)
        cipher = words[at + 1] if at + 1 < len(words) else ""
        hop.protocol = " ".join(words[:at])
        hop.tls = f"{hop.tls} {cipher}".strip() if hop.tls else (cipher or "yes")


# --- who wrote it ---------------------------------------------------------

SOFTWARE = (
    (re.compile(r"(?i)mailsuite"), "mailsuite"),
    (re.compile(r"(?i)postfix"), "Postfix"),
    (re.compile(r"^\d+\.\d+\.\d+(\.\d+)?/\d+\.\d+\.\d+"), "Sendmail"),
    (re.compile(r"(?i)\bexim\b"), "Exim"),
    (re.compile(r"(?i)opensmtpd"), "OpenSMTPD"),
    (re.compile(r"(?i)^qmail\b"), "qmail"),
    (re.compile(r"(?i)Microsoft SMTP Server|^mapi$|Frontend Transport"), "Microsoft Exchange"),
    (re.compile(r"(?i)dovecot"), "Dovecot"),
)


def identify(hop):
    """The MTA's name from the line's software comment, protocol and host names; '' when it says nothing."""
    for text in (hop.software, hop.protocol):
        for pattern, name in SOFTWARE:
            if text and pattern.search(text):
                return name
    if hop.by_host.lower().endswith((".google.com", "google.com")) or _gmail_by(hop.by_host):
        return "Gmail"
    if hop.protocol.upper().startswith("LMTP"):
        return "LMTP (Dovecot)" if re.fullmatch(r"[A-Za-z0-9+/]{22,}", hop.id or "") else "LMTP"
    if re.search(r"from \S+ \(HELO [^)]*\) \(", hop.text):       # qmail-smtpd's own layout
        return "qmail"
    return ""


def _gmail_by(host):
    """Gmail's internal hops say `by 2002:a05:...` (an IPv6 address written bare)."""
    try:
        return ipaddress.ip_address(host).version == 6 and host.startswith("2002:")
    except ValueError:
        return False


def organisation(host):
    """A guess at who runs HOST: its last two labels (mx.b.example -> b.example); an address stays itself."""
    if not host or _is_address(host):
        return host
    labels = host.rstrip(".").split(".")
    return ".".join(labels[-2:]) if len(labels) > 2 else host
