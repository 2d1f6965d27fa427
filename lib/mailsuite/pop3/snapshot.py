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
line ends and dot-stuffing, exactly as imapd serves them (`served_header`,
`served_body`).  The octet counts are what RETR sends, from the store's
index (client size plus what POP3 adds), so STAT and LIST never read a
message.  RETR and TOP find the message again under a read lock (another
program may have rewritten the file since the snapshot: the store checks
its offset, From_ line and X-UID, and looks it up by UID after a rewrite),
copy it out, and send it after letting go of the lock.

Only one POP3 session per user at a time (RFC 1939's exclusive maildrop):
an fcntl lock on a per-user file in the user's state directory, held for
the session, which never blocks deliveries or imapd.
"""

import errno
import fcntl
import os

from ..store import mailgroup
from ..store.format import served_body, served_header
from ..store.mailbox import Mailbox
from ..store.table import FLAG_BITS, LETTERS

READ, NOT_NEW = FLAG_BITS["R"], FLAG_BITS["O"]

CHUNK = 1 << 18
SESSION_LOCK = "pop3.session.lock"


class InUse(Exception):
    """Another POP3 session holds this maildrop."""


def state_directory(cfg, user):
    """Where per-user server state lives: the index directory, else ~/.mailsuite."""
    template = cfg.mailsuite.index_dir
    return cfg.expand_user_path(template, user.home) if template else os.path.join(user.home, ".mailsuite")


def take_session_lock(cfg, user):
    """The open fd holding the user's POP3 session lock; InUse if another session has it.

    The lock file lives in the user's state directory; a user without a
    usable home gets one beside the spool instead, made with the mail group
    the session holds in reserve for its locks (see mailgroup).
    """
    try:
        directory = state_directory(cfg, user)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, SESSION_LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        spool_dir, name = os.path.split(user.spool)
        with mailgroup.enabled():
            fd = os.open(os.path.join(spool_dir, f".{name}.pop3.lock"),
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


class Gone(Exception):
    """Another program removed the message since the session began."""


def _identity(table, row):
    """What must not change under a UID: its envelope line and body length."""
    return table.from_bytes(row), table.end[row] - table.body[row]


class Maildrop:
    """The session's snapshot of one spool; message numbers are 1-based.

    The snapshot is the store's index itself (compact columns, see
    store/table.py): STAT, LIST and UIDL add up and format its columns,
    and a Message is made only for the one message RETR or TOP sends.
    """

    def __init__(self, mailbox, index):
        self.mailbox = mailbox
        self.index = index
        self.messages = index.messages
        self.uidvalidity = index.uidvalidity
        self.key = mailbox.key()      # the file as the snapshot saw it
        self.deleted = set()          # message numbers
        self.retrieved = set()

    @classmethod
    def open(cls, cfg, user):
        """Snapshot USER's spool, giving new messages their UIDs; an absent spool is empty.

        Only assigning UIDs needs the write lock; a spool whose messages all
        have theirs is read under a read lock, so it can be read on a full disk.
        """
        mailbox = Mailbox(user.spool, cfg, owner=user)
        index = mailbox.scan()
        if mailbox.exists and index.count and (not index.base_in_file or not index.all_have_uids):
            with mailbox.locked():
                index = mailbox.sync()
        return cls(mailbox, index)

    def close(self):
        self.mailbox.close()

    # --- the listing -----------------------------------------------------

    def _row(self, number):
        return self.index.first + number - 1

    def exists(self, number):
        """Whether message NUMBER is there and not deleted."""
        return 1 <= number <= len(self.messages) and number not in self.deleted

    def message_at(self, number):
        return self.messages[number - 1]

    def live_numbers(self):
        return [n for n in range(1, len(self.messages) + 1) if n not in self.deleted]

    def uidl(self, number):
        """Dovecot's default pop3_uidl_format, %08Xu%08Xv, which Dovecot prints in lower case."""
        return f"{self.index.uid_at(self._row(number)):08x}{self.uidvalidity:08x}"

    def listing(self, field):
        """'N VALUE' for every live message, FIELD being octets or uidl: LIST and UIDL without arguments."""
        first, count, deleted = self.index.first, len(self.messages), self.deleted
        if field == "uidl":
            suffix = f"{self.uidvalidity:08x}"
            uids = self.index.table.uid[first:first + count]
            return [f"{n} {uid:08x}{suffix}" for n, uid in enumerate(uids, 1) if n not in deleted]
        table = self.index.table
        sizes = map(int.__add__, table.client_size[first:first + count], table.pop3_extra[first:first + count])
        return [f"{n} {octets}" for n, octets in enumerate(sizes, 1) if n not in deleted]

    def octets(self, number):
        """Exactly the bytes RETR sends before the final '.' line: the client size plus dot-stuffing."""
        table, row = self.index.table, self._row(number)
        return table.client_size[row] + table.pop3_extra[row]

    def stat(self):
        table, first, count = self.index.table, self.index.first, len(self.messages)
        total = sum(table.client_size[first:first + count]) + sum(table.pop3_extra[first:first + count])
        return count - len(self.deleted), total - sum(self.octets(n) for n in self.deleted)

    # --- sending ---------------------------------------------------------

    def copy(self, number):
        """(message, its bytes copied out) for sending, found again under a read lock; Gone if it went."""
        msg = self.message_at(number)
        with self.mailbox.reading():
            if self.mailbox.key() != self.key or not self.mailbox.still_there(msg):
                msg = self.mailbox.current(msg)
                if msg is None:
                    raise Gone(f"message {number} was removed by another program")
            return msg, self.mailbox.copies([msg])

    @staticmethod
    def send(copied, write, body_lines=None):
        """Write a message `copy()` returned through WRITE; with BODY_LINES, its header and that many body lines (TOP).

        The mailbox is not locked while the client reads.
        """
        msg, source = copied
        try:
            write(dot_stuff(served_header(source.read(msg, msg.header, msg.body))))
            chunks = _chunks(source, msg) if body_lines is None else _first_lines(source, msg, body_lines)
            for chunk in chunks:
                write(dot_stuff(served_body(chunk)))
        finally:
            source.close()

    # --- QUIT ------------------------------------------------------------

    def _changes(self):
        """Whether QUIT has anything to write: deletions, or flags the snapshot does not have yet."""
        table = self.index.table
        return (bool(self.deleted) or any(not table.flags[self._row(n)] & READ for n in self.retrieved)
                or self.index.count_without("O") > 0)

    def commit(self):
        """UPDATE state: expunge deleted messages, mark the others old and retrieved ones read; durable on return.

        Flags are merged into the current ones under the lock, so what an
        IMAP session changed meanwhile is kept; a deleted message is removed
        only if it is still the message the client saw.
        """
        if not len(self.messages) or not self._changes():
            return
        index, table = self.index, self.index.table
        deleted = {index.uid_at(self._row(n)): _identity(table, self._row(n)) for n in self.deleted}
        retrieved = {index.uid_at(self._row(n)) for n in self.retrieved}
        last_uid = index.uid_at(self._row(len(self.messages)))  # UIDs ascend: the snapshot is every uid up to it
        self.index = self.messages = index = table = None        # let the snapshot go before the store works
        with self.mailbox.locked():
            current = self.mailbox.scan()
            if current.uidvalidity != self.uidvalidity:
                raise Changed("the mailbox was renumbered during the session")
            table = current.table
            flags = {}
            for row in range(current.first, current.valid):
                uid = table.uid[row]
                if uid > last_uid:
                    break
                if uid in deleted:
                    if _identity(table, row) != deleted[uid]:
                        raise Changed(f"message uid {uid} changed during the session")
                    continue
                mask = table.flags[row]
                wanted = mask | NOT_NEW | (READ if uid in retrieved else 0)
                if wanted != mask:
                    flags[uid] = (LETTERS[wanted & 63], table.keywords(row))
            del current, table
            self.mailbox.sync(flags=flags, expunge=deleted)


def dot_stuff(data):
    """RFC 1939 byte-stuffing for CRLF text that starts at a line start."""
    data = data.replace(b"\n.", b"\n..")
    return b"." + data if data.startswith(b".") else data


def _chunks(mailbox, msg):
    """The body in line-aligned chunks, read as it is sent (bounded memory); the last ends with a newline."""
    carry = b""
    with mailbox.open_range(msg, msg.body, msg.end) as f:
        while block := f.read(CHUNK):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            if cut:
                yield block[:cut]
    if carry:
        yield carry + b"\n"


def _first_lines(mailbox, msg, count):
    """The first COUNT lines of the body (TOP)."""
    if count <= 0:
        return
    for chunk in _chunks(mailbox, msg):
        lines = chunk.count(b"\n")
        if lines >= count:
            cut = -1
            for _ in range(count):
                cut = chunk.index(b"\n", cut + 1)
            yield chunk[:cut + 1]
            return
        yield chunk
        count -= lines
