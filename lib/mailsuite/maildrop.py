"""A POP3 maildrop: one user's spool as a numbered snapshot, on the wire.

RFC 1939 numbers messages from 1 for the length of a session, so the
session works on a snapshot taken at login (`Maildrop.open`): under the
mailbox lock, UIDs are assigned to new mail (X-UID/X-IMAPbase, as Dovecot
does), then the lock is released at once so deliveries go on while the
client reads.  Mail that arrives meanwhile waits for the next session.  At
QUIT (`commit`) the lock is taken again to remove the deleted messages and
mark the retrieved ones read (`Status: RO`), in one crash-safe, fsynced
rewrite by the store: a session that dies before that changes nothing.

Messages go out as stored, minus the store's own headers (Status, X-UID,
...: they are bookkeeping, and would change between sessions), with CRLF
line ends and dot-stuffing; the octet counts are exactly what RETR sends.

Only one POP3 session per user at a time (RFC 1939's exclusive maildrop):
an fcntl lock on a per-user file in the user's state directory, held for
the session, which never blocks deliveries or imapd.
"""

import errno
import fcntl
import os

from .mbox import HEADER_PARSE_LIMIT, STORE_HEADERS, Mailbox

CHUNK = 1 << 18
SESSION_LOCK = "pop3.session.lock"


class InUse(Exception):
    """Another POP3 session holds this maildrop."""


def state_directory(cfg, user):
    """Where per-user server state lives: the index directory, else ~/.mailsuite."""
    template = cfg.mailsuite.index_dir
    return cfg.expand_user_path(template, user.home) if template else os.path.join(user.home, ".mailsuite")


def take_session_lock(cfg, user):
    """The open fd holding the user's POP3 session lock; InUse if another session has it."""
    directory = state_directory(cfg, user)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, SESSION_LOCK),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            raise InUse() from None
        raise
    return fd


class Changed(Exception):
    """The spool was rewritten by someone else in a way that makes our message numbers unsafe."""


def _identity(msg):
    """What must not change under a UID: its envelope line and body length."""
    return msg.from_line, msg.end - msg.body


class Maildrop:
    """The session's snapshot of one spool; message numbers are 1-based."""

    def __init__(self, mailbox, index):
        self.mailbox = mailbox
        self.messages = index.messages
        self.uidvalidity = index.uidvalidity
        self.deleted = set()          # message numbers
        self.retrieved = set()
        self._octets = {}

    @classmethod
    def open(cls, cfg, user):
        """Snapshot USER's spool, giving new messages their UIDs; an absent spool is empty."""
        mailbox = Mailbox(user.spool, cfg, owner=user)
        if not mailbox.exists:
            return cls(mailbox, mailbox.scan())
        with mailbox.locked():
            index = mailbox.sync()
        return cls(mailbox, index)

    def close(self):
        self.mailbox.close()

    # --- the listing -----------------------------------------------------

    def message(self, number):
        """The Message numbered NUMBER (not deleted), or None."""
        if 1 <= number <= len(self.messages) and number not in self.deleted:
            return self.messages[number - 1]
        return None

    def live_numbers(self):
        return [n for n in range(1, len(self.messages) + 1) if n not in self.deleted]

    def uidl(self, number):
        """Dovecot's default pop3_uidl_format, %08Xu%08Xv, which Dovecot prints in lower case."""
        return f"{self.messages[number - 1].uid:08x}{self.uidvalidity:08x}"

    def octets(self, number):
        """Exactly the bytes RETR sends before the final '.' line (CRLF, dot-stuffed)."""
        size = self._octets.get(number)
        if size is None:
            size = sum(_wire_size(chunk) for chunk in self._content(self.messages[number - 1]))
            self._octets[number] = size
        return size

    def stat(self):
        numbers = self.live_numbers()
        return len(numbers), sum(self.octets(n) for n in numbers)

    # --- sending ---------------------------------------------------------

    def send(self, number, write, body_lines=None):
        """Write message NUMBER in wire form through WRITE; with BODY_LINES, headers and that many body lines (TOP)."""
        for chunk in self._content(self.messages[number - 1], body_lines):
            write(to_wire(chunk))

    def _content(self, msg, body_lines=None):
        """The message as served, in chunks that each end at a line end (the last may not)."""
        header_end = _header_end(self.mailbox, msg)
        header = _without_store_headers(self.mailbox.read(msg, msg.header, header_end))
        yield header if header.endswith(b"\n") or not header else header + b"\n"
        if body_lines is None:
            yield from _chunks(self.mailbox, msg, header_end)
        else:
            yield from _first_lines(self.mailbox, msg, header_end, body_lines)

    # --- QUIT ------------------------------------------------------------

    def commit(self):
        """UPDATE state: expunge deleted messages, mark retrieved ones read; durable on return."""
        if not self.messages:
            return
        deleted_uids = {self.messages[n - 1].uid for n in self.deleted}
        retrieved_uids = {self.messages[n - 1].uid for n in self.retrieved}
        identities = {m.uid: _identity(m) for m in self.messages}
        mine = set(identities)
        with self.mailbox.locked():
            current = self.mailbox.scan()
            if current.uidvalidity != self.uidvalidity:
                raise Changed("the mailbox was renumbered during the session")
            flags = {}
            for m in current.messages:
                if m.uid not in mine:
                    continue
                if _identity(m) != identities[m.uid]:
                    raise Changed(f"message uid {m.uid} changed during the session")
                if m.uid not in deleted_uids:
                    wanted = m.flags | {"O"} | ({"R"} if m.uid in retrieved_uids else set())
                    if wanted != m.flags:
                        flags[m.uid] = (frozenset(wanted), m.keywords)
            self.mailbox.sync(flags=flags, expunge=deleted_uids)


def to_wire(chunk):
    """LF -> CRLF and dot-stuffing, for a chunk that starts at a line start."""
    data = chunk.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
    return b"." + data if data.startswith(b".") else data


def _wire_size(chunk):
    return len(chunk) + chunk.count(b"\n") + chunk.count(b"\n.") + chunk.startswith(b".")


def _header_end(mailbox, msg):
    """End of the part searched for store headers: the body, or a line end within the scanner's limit."""
    if msg.body - msg.header <= HEADER_PARSE_LIMIT:
        return msg.body
    head = mailbox.read(msg, msg.header, msg.header + HEADER_PARSE_LIMIT)
    return msg.header + head.rfind(b"\n") + 1 if b"\n" in head else msg.header


def _without_store_headers(header):
    """A header block minus Status, X-Status, X-Keywords, X-UID, X-IMAPbase and their continuations."""
    out = []
    skipping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and line.strip():
            if not skipping:
                out.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() in STORE_HEADERS
        if not skipping:
            out.append(line)
    return b"".join(out)


def _chunks(mailbox, msg, start):
    """The rest of the message in line-aligned chunks, read as it is sent (bounded memory)."""
    carry = b""
    with mailbox.open_range(msg, start, msg.end) as f:
        while block := f.read(CHUNK):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield block[:cut]
    if carry:
        yield carry + b"\n"


def _first_lines(mailbox, msg, start, count):
    """The first COUNT lines of the body (TOP)."""
    if count <= 0:
        return
    for chunk in _chunks(mailbox, msg, start):
        lines = chunk.count(b"\n")
        if lines >= count:
            cut = -1
            for _ in range(count):
                cut = chunk.index(b"\n", cut + 1)
            yield chunk[:cut + 1]
            return
        yield chunk
        count -= lines
