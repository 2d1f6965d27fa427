"""One IMAP4rev1 session (RFC 3501), as a table of commands.

Each command names its handler and the states it is valid in; the loop
reads a command (literals included, with continuation requests for
synchronising ones), parses it, checks the state, runs the handler and
ends with the tagged result, after any untagged updates about the selected
mailbox.  Handlers raise `No` or `Bad` for the tagged failure; response
codes ride in the text (`[TRYCREATE] ...`).

Security stance: nothing but CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE,
NOOP, ID and LOGOUT before authentication; LOGINDISABLED whenever the
configuration forbids plaintext passwords on this connection; privileges
dropped to the user right after login, before any mailbox is opened; every
line, literal and command bounded; a client that keeps sending garbage is
disconnected, and so is one that fails `max_login_failures` logins.
"""

import enum
import errno
import re
import ssl
import tempfile
import time
from typing import NamedTuple

from ..server import auth, connection
from ..store import mailbox as mbox
from ..store.locking import LockTimeout
from ..store.prepare import DeliveryError, prepare
from . import parser
from .fetch import MessageFetcher
from .idle import MailboxWatcher
from .mailboxes import MailboxNameError, MailStore, NoSuchMailbox
from .response import astring, untagged
from .search import SearchContext, compile_search
from .selected import (
    SEEN,
    SYSTEM_FLAG_NAMES,
    FlagChange,
    SelectedMailbox,
    UidValidityChanged,
    flag_names,
    scan_with_uids,
    split_flags,
)

VERSION = "0.1.0"
ANSWERED = object()  # a handler that already sent its tagged reply returns this
EXPUNGE_ISSUED = "[EXPUNGEISSUED] Some messages were already expunged"  # RFC 5530, as Dovecot says it
LOCK_BATCH_BYTES = 4 << 20  # content read (and sent) under one hold of the mailbox lock
SPOOL_LITERAL = 256 << 10  # APPEND literals bigger than this wait in a temporary file
SPOOL_CHUNK = 64 << 10


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset(State) - {State.LOGOUT}
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


class No(Exception):
    """Tagged NO; the text may start with a response code."""


class Bad(Exception):
    """Tagged BAD."""


# What a failure of the mail storage says to the client (RFC 5530 response codes): the temporary
# ones clearly so, the rest as a server bug with the details left to the log.
STORAGE_ERRORS = {
    errno.ENOSPC: "[UNAVAILABLE] the mail storage is full; try again later",
    errno.EDQUOT: "[OVERQUOTA] the mailbox owner's disk quota is used up",
    errno.EAGAIN: "[UNAVAILABLE] the mailbox is being recovered from an interrupted change; try again later",
}


def storage_failure(exc):
    """The tagged NO text for an OSError of the store."""
    return STORAGE_ERRORS.get(exc.errno, f"[SERVERBUG] {exc.strerror or 'system error'}")


class Entry(NamedTuple):
    """A row of the command table: the Session method and the states it is valid in."""

    handler: str
    states: frozenset


# RFC 3501 section 6 and the extensions, by state (the UID forms are their own rows)
COMMANDS = {
    "CAPABILITY": Entry("cmd_capability", ANY),
    "NOOP": Entry("cmd_noop", ANY),
    "LOGOUT": Entry("cmd_logout", ANY),
    "ID": Entry("cmd_id", ANY),
    "STARTTLS": Entry("cmd_starttls", NOT_AUTH),
    "AUTHENTICATE": Entry("cmd_authenticate", NOT_AUTH),
    "LOGIN": Entry("cmd_login", NOT_AUTH),
    "SELECT": Entry("cmd_select", AUTH),
    "EXAMINE": Entry("cmd_examine", AUTH),
    "CREATE": Entry("cmd_create", AUTH),
    "DELETE": Entry("cmd_delete", AUTH),
    "RENAME": Entry("cmd_rename", AUTH),
    "SUBSCRIBE": Entry("cmd_subscribe", AUTH),
    "UNSUBSCRIBE": Entry("cmd_unsubscribe", AUTH),
    "LIST": Entry("cmd_list", AUTH),
    "LSUB": Entry("cmd_lsub", AUTH),
    "STATUS": Entry("cmd_status", AUTH),
    "APPEND": Entry("cmd_append", AUTH),
    "NAMESPACE": Entry("cmd_namespace", AUTH),
    "IDLE": Entry("cmd_idle", AUTH),
    "CHECK": Entry("cmd_check", SELECTED),
    "CLOSE": Entry("cmd_close", SELECTED),
    "UNSELECT": Entry("cmd_unselect", SELECTED),
    "EXPUNGE": Entry("cmd_expunge", SELECTED),
    "SEARCH": Entry("cmd_search", SELECTED),
    "FETCH": Entry("cmd_fetch", SELECTED),
    "STORE": Entry("cmd_store", SELECTED),
    "COPY": Entry("cmd_copy", SELECTED),
    "MOVE": Entry("cmd_move", SELECTED),
    "UID FETCH": Entry("cmd_fetch", SELECTED),
    "UID SEARCH": Entry("cmd_search", SELECTED),
    "UID STORE": Entry("cmd_store", SELECTED),
    "UID COPY": Entry("cmd_copy", SELECTED),
    "UID MOVE": Entry("cmd_move", SELECTED),
    "UID EXPUNGE": Entry("cmd_expunge", SELECTED),
}


_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")


class Session:
    def __init__(self, conn, cfg, logger, *, authenticator=None, preauth_user=None, tls_context=None):
        self.conn = conn
        self.cfg = cfg
        self.logger = logger
        self.auth = authenticator
        self.tls_context = tls_context
        self.state = State.NOT_AUTHENTICATED
        self.user = None
        self.store = None
        self.selected = None
        self.bad_in_a_row = 0
        self.preauth_user = preauth_user
        self.spooled = {}  # offset of a literal in the command -> temporary file with its bytes

    # --- the command table ---------------------------------------------------

    # uses message numbers: no EXPUNGE may be sent while they run (RFC 3501 7.4.1)
    NUMBERED = frozenset(("FETCH", "STORE", "SEARCH", "COPY"))

    # --- output ----------------------------------------------------------------

    def send(self, *parts):
        for chunk in untagged(*parts):
            self.conn.write(chunk)

    def send_line(self, text):
        self.conn.write(text.encode("utf-8", "surrogateescape") + b"\r\n")

    def tagged(self, tag, status, text):
        self.send_line(f"{tag} {status} {text}")

    # --- the loop ----------------------------------------------------------------

    def capabilities(self):
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID"]
        if self.state == State.NOT_AUTHENTICATED:
            if self.tls_context is not None and not self.conn.is_tls:
                caps.append("STARTTLS")
            if self.plaintext_ok():
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += ["IDLE", "UIDPLUS", "NAMESPACE", "UNSELECT", "MOVE", "CHILDREN"]
            if self.cfg.imap.special_use:
                caps.append("SPECIAL-USE")
        return caps

    def plaintext_ok(self):
        return auth.plaintext_allowed(self.cfg, self.conn)

    def run(self):
        if self.preauth_user is not None:
            self.start_user(self.preauth_user)
            self.send_line(f"* PREAUTH [CAPABILITY {' '.join(self.capabilities())}] {self.cfg.hostname} ready")
        else:
            self.send_line(f"* OK [CAPABILITY {' '.join(self.capabilities())}] {self.cfg.hostname} IMAP4rev1 ready")
        try:
            while self.state != State.LOGOUT:
                data = self.read_command()
                if data is None:
                    continue
                self.execute(data)
        except connection.IdleTimeout:
            self.send_line("* BYE autologout; idle for too long")
        except connection.TooManyCommands:
            self.send_line("* BYE too many commands before login")
        except UidValidityChanged:
            self.send_line("* BYE mailbox was replaced by another program; please reconnect")
        finally:
            if self.selected is not None:
                self.unselect(quietly=True)
            try:
                self.conn.flush()
            except (connection.PeerGone, connection.IdleTimeout):
                pass

    def read_command(self):
        """One command's bytes with literals inline, or None after answering a framing error.

        A big APPEND literal goes to a temporary file instead (see `self.spooled`),
        so a 50 MB message costs a session no more memory than a small one.
        """
        imap = self.cfg.imap
        pieces = []
        total = 0
        self.spooled = {}
        while True:
            try:
                line = self.conn.readline(imap.max_line_length)
            except connection.LineTooLong:
                self.bad_line(b"".join(pieces), "line too long")
                return None
            total += len(line)
            m = _LITERAL_AT_END.search(line)
            if not m:
                pieces.append(line.rstrip(b"\r\n"))
                return b"".join(pieces)
            size, non_sync = int(m.group(1)), bool(m.group(2))
            head = b"".join(pieces) + line
            appending = self._is_append(head) and self.state in AUTH     # before login, no message is taken
            limit = imap.max_message_size if appending else imap.max_command_size
            if size > limit or total + size > max(limit, imap.max_command_size) + imap.max_line_length:
                if non_sync:
                    self.send_line("* BYE literal too large")
                    self.state = State.LOGOUT
                    return None
                tag = parser.parse_tag(head) or "*"
                self.tagged(tag, "NO", "[TOOBIG] literal too large")
                return None
            if not non_sync:
                self.send_line("+ Ready for literal data")
            marker = line[: m.end(2) + 1] + b"\r\n"
            if size > SPOOL_LITERAL and limit == imap.max_message_size:
                self.spooled[sum(map(len, pieces)) + m.start()] = self.spool_literal(size)
                pieces.append(line[: m.start()] + b"{0}\r\n")
            else:
                pieces.append(marker)
                pieces.append(self.conn.read_exact(size))
            total += size

    def spool_literal(self, size):
        spool = tempfile.TemporaryFile()
        left = size
        while left:
            chunk = self.conn.read_exact(min(left, SPOOL_CHUNK))
            spool.write(chunk)
            left -= len(chunk)
        spool.seek(0)
        return spool

    @staticmethod
    def _is_append(head):
        return re.match(rb"[^ ]+ APPEND ", head, re.I) is not None

    def bad_line(self, head, text):
        tag = parser.parse_tag(head) if head else None
        self.tagged(tag or "*", "BAD", text)
        self.count_bad()

    def count_bad(self):
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.imap.max_bad_commands:
            self.send_line("* BYE too many invalid commands")
            self.state = State.LOGOUT

    def execute(self, data):
        try:
            self.execute_parsed(data)
        finally:
            for spool in self.spooled.values():
                spool.close()
            self.spooled = {}

    def execute_parsed(self, data):
        if not data.strip():
            return
        try:
            command = parser.parse_command(data, self.spooled)
        except parser.BadCharset:
            tag = parser.parse_tag(data) or "*"
            self.tagged(tag, "NO", "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
            return
        except parser.ParseError as exc:
            self.tagged(exc.tag or "*", "BAD", str(exc))
            self.count_bad()
            return
        entry = COMMANDS[command.name]
        if self.state not in entry.states:
            self.tagged(command.tag, "BAD", f"{command.name} not allowed in the {self.state.value} state")
            self.count_bad()
            return
        self.bad_in_a_row = 0
        try:
            text = getattr(self, entry.handler)(command)
            if text is ANSWERED:
                return
            text = text or f"{command.name} completed"
        except No as exc:
            self.updates(command)
            self.tagged(command.tag, "NO", str(exc))
            return
        except Bad as exc:
            self.tagged(command.tag, "BAD", str(exc))
            self.count_bad()
            return
        except LockTimeout:
            self.tagged(command.tag, "NO", "[INUSE] mailbox is locked by another program; try again")
            return
        except mbox.MailboxError as exc:
            self.logger.error("%s", exc)
            self.tagged(command.tag, "NO", "[SERVERBUG] the mailbox file is not usable; see the server log")
            return
        except OSError as exc:
            self.logger.error("%s: %s", command.name, exc)
            self.tagged(command.tag, "NO", storage_failure(exc))
            return
        except (connection.PeerGone, connection.SessionLimit, UidValidityChanged):
            raise
        except Exception:
            # a bug must cost the command, not the session and the user's pending flag changes
            self.logger.exception("%s failed", command.name)
            self.tagged(command.tag, "NO", "[SERVERBUG] internal error; see the server log")
            return
        if self.state == State.LOGOUT:
            self.tagged(command.tag, "OK", text)
            return
        self.updates(command)
        self.tagged(command.tag, "OK", text)

    def updates(self, command):
        """Untagged news about the selected mailbox before a tagged reply."""
        if self.selected is None or command.name in ("SELECT", "EXAMINE", "CLOSE", "UNSELECT", "LOGOUT"):
            return
        allow_expunge = command.name not in self.NUMBERED
        for parts in self.refreshed(allow_expunge):
            self.send(*parts)

    def refreshed(self, allow_expunge=True):
        """The selected mailbox's news; a mailbox that cannot be read just now has none (the session goes on)."""
        try:
            return self.selected.refresh(allow_expunge=allow_expunge)
        except (LockTimeout, OSError, mbox.MailboxError) as exc:
            self.logger.warning("%s: not refreshed: %s", self.selected.name, exc)
            return []

    # --- any state -----------------------------------------------------------------

    def cmd_capability(self, command):
        self.send("CAPABILITY", *self.capabilities())

    def cmd_noop(self, command):
        pass

    def cmd_logout(self, command):
        self.send_line("* BYE logging out")
        self.state = State.LOGOUT
        return "LOGOUT completed"

    def cmd_id(self, command):
        self.send("ID", [b"name", b"mailsuite imapd", b"version", VERSION.encode()])

    # --- not authenticated ------------------------------------------------------

    def cmd_starttls(self, command):
        if self.tls_context is None or self.conn.is_tls:
            raise Bad("STARTTLS is not available")
        self.tagged(command.tag, "OK", "begin TLS negotiation now")
        try:
            self.conn.starttls(self.tls_context)
        except (ssl.SSLError, OSError) as exc:
            raise connection.PeerGone(str(exc)) from None
        return ANSWERED

    def cmd_login(self, command):
        if not self.plaintext_ok():
            raise No("[PRIVACYREQUIRED] LOGIN is disabled until STARTTLS")
        username, password = command.args
        self.login(username, password)
        return "[CAPABILITY " + " ".join(self.capabilities()) + "] LOGIN completed"

    def cmd_authenticate(self, command):
        mechanism, initial = command.args
        if mechanism != "PLAIN":
            raise No("unsupported authentication mechanism")
        if not self.plaintext_ok():
            raise No("[PRIVACYREQUIRED] AUTHENTICATE PLAIN is disabled until STARTTLS")
        if initial is None:
            self.send_line("+ ")
            try:
                initial = self.conn.readline(self.cfg.imap.max_line_length).rstrip(b"\r\n").decode("ascii", "replace")
            except connection.LineTooLong:
                raise Bad("authentication line too long") from None
        if initial == "*":
            raise Bad("authentication cancelled")
        try:
            authzid, username, password = auth.decode_sasl_plain("" if initial == "=" else initial)
        except ValueError as exc:
            raise Bad(f"bad PLAIN response: {exc}") from None
        if authzid and authzid != username:
            raise No("[AUTHORIZATIONFAILED] authorization identity must match")
        self.login(username, password)
        return "[CAPABILITY " + " ".join(self.capabilities()) + "] AUTHENTICATE completed"

    def login(self, username, password):
        user = self.auth.authenticate(username, password, self.conn.peer) if self.auth else None
        if user is None:
            if self.auth is not None and self.auth.exhausted:
                self.send_line("* BYE too many failed logins")
                self.state = State.LOGOUT
            raise No("[AUTHENTICATIONFAILED] authentication failed")
        self.start_user(user)

    def start_user(self, user):
        auth.drop_privileges(user, self.cfg)
        self.user = user
        self.store = MailStore(self.cfg, user)
        self.state = State.AUTHENTICATED
        self.conn.end_login_phase()

    # --- authenticated: mailboxes ------------------------------------------------------

    def cmd_select(self, command, readonly=False):
        if self.selected is not None:
            self.unselect(quietly=True)
            self.send_line("* OK [CLOSED] previous mailbox closed")
        name = command.args[0]
        try:
            selected = SelectedMailbox(self.store, name, readonly)
        except (NoSuchMailbox, MailboxNameError):
            raise No("[NONEXISTENT] no such mailbox") from None
        self.selected = selected
        self.state = State.SELECTED
        keywords = tuple(selected.announced)
        self.send("FLAGS", SYSTEM_FLAG_NAMES + keywords)
        permanent = () if readonly else SYSTEM_FLAG_NAMES + keywords + ("\\*",)
        self.send("OK", "[PERMANENTFLAGS", "(" + " ".join(permanent) + ")]", "Flags permitted.")
        self.send(str(selected.exists), "EXISTS")
        self.send(str(len(selected.recent)), "RECENT")
        for seq, uid in enumerate(selected.uids, 1):
            if "R" not in selected.flags_of(uid)[0]:
                self.send("OK", f"[UNSEEN {seq}]", "First unseen.")
                break
        self.send("OK", f"[UIDVALIDITY {selected.uidvalidity}]", "UIDs valid")
        self.send("OK", f"[UIDNEXT {selected.uidnext}]", "Predicted next UID")
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        return f"[{mode}] {command.name} completed"

    def cmd_examine(self, command):
        return self.cmd_select(command, readonly=True)

    def unselect(self, quietly=False):
        try:
            self.selected.write_back()
        except (LockTimeout, OSError, mbox.MailboxError) as exc:
            if not quietly:
                raise
            self.logger.warning("flags not written back: %s", exc)
        finally:
            self.selected.close()
            self.selected = None
            if self.state == State.SELECTED:
                self.state = State.AUTHENTICATED

    def cmd_create(self, command):
        try:
            self.store.create(command.args[0])
        except MailboxNameError as exc:
            raise No(str(exc)) from None

    def cmd_delete(self, command):
        name = command.args[0]
        if self.selected is not None and self.selected.name == name:
            self.unselect()
        try:
            self.store.delete(name)
        except NoSuchMailbox:
            raise No("[NONEXISTENT] no such mailbox") from None
        except MailboxNameError as exc:
            raise No(str(exc)) from None

    def cmd_rename(self, command):
        old, new = command.args
        try:
            self.store.rename(old, new)
        except NoSuchMailbox:
            raise No("[NONEXISTENT] no such mailbox") from None
        except MailboxNameError as exc:
            raise No(str(exc)) from None

    def cmd_subscribe(self, command):
        try:
            self.store.subscribe(command.args[0])
        except MailboxNameError as exc:
            raise No(str(exc)) from None

    def cmd_unsubscribe(self, command):
        self.store.unsubscribe(command.args[0])

    def cmd_list(self, command):
        reference, pattern = command.args
        for attributes, name in self.store.list(reference, pattern):
            self.send("LIST", "(" + " ".join(attributes) + ")", b"/", mailbox_name(name))

    def cmd_lsub(self, command):
        reference, pattern = command.args
        for attributes, name in self.store.lsub(reference, pattern):
            self.send("LSUB", "(" + " ".join(attributes) + ")", b"/", mailbox_name(name))

    def cmd_namespace(self, command):
        self.send("NAMESPACE", [[b"", b"/"]], None, None)

    def cmd_status(self, command):
        name, items = command.args
        if self.selected is not None and self.selected.name == name:
            self.selected.write_back()
        try:
            box = self.store.open(name)
        except (NoSuchMailbox, MailboxNameError):
            raise No("[NONEXISTENT] no such mailbox") from None
        try:
            index = scan_with_uids(box)
            values = {
                "MESSAGES": len(index.messages),
                "RECENT": sum(1 for m in index.messages if "O" not in m.flags),
                "UIDNEXT": index.uidnext,
                "UIDVALIDITY": index.uidvalidity,
                "UNSEEN": sum(1 for m in index.messages if "R" not in m.flags),
            }
        finally:
            box.close()
        out = []
        for item in items:
            out += [item, values[item]]
        self.send("STATUS", mailbox_name(name), out)

    def cmd_append(self, command):
        append = command.args[0]
        try:
            box = self.store.open_for_append(append.mailbox)
        except (NoSuchMailbox, MailboxNameError):
            raise No("[TRYCREATE] no such mailbox") from None
        letters, keywords = split_flags(append.flags)
        message = append.message
        try:
            if not isinstance(message, bytes):
                message = prepare(message, self.cfg.imap.max_message_size, quote=False)
            with box.locked():
                uid = box.append(
                    message,
                    sender="MAILER-DAEMON",
                    date=append.date,
                    flags=frozenset(letters),
                    keywords=tuple(keywords),
                    assign_uid=True,
                )
                uidvalidity = box.scan().uidvalidity
        except DeliveryError as exc:
            raise No(f"message refused: {exc}") from None
        finally:
            if not isinstance(message, bytes):
                message.close()
            box.close()
        return f"[APPENDUID {uidvalidity} {uid}] APPEND completed"

    def cmd_idle(self, command):
        self.send_line("+ idling")
        watcher = MailboxWatcher(self.selected.box.path if self.selected else None, self.cfg.imap.idle_poll)
        deadline = time.monotonic() + self.cfg.imap.idle_timeout
        try:
            while True:
                if self.selected is not None:
                    for parts in self.refreshed():
                        self.send(*parts)
                self.conn.flush()
                if watcher.wait(self.conn, deadline) == "input":
                    break
                if time.monotonic() >= deadline:
                    raise connection.IdleTimeout()
        finally:
            watcher.close()
        line = self.conn.readline(self.cfg.imap.max_line_length).rstrip(b"\r\n")
        if line.upper() != b"DONE":
            raise Bad("expected DONE")
        return "IDLE terminated"

    # --- selected ------------------------------------------------------------------------

    def cmd_check(self, command):
        self.selected.write_back()

    def cmd_close(self, command):
        if not self.selected.readonly:
            self.selected.expunge()
        self.unselect()

    def cmd_unselect(self, command):
        self.unselect()

    def cmd_expunge(self, command):
        if self.selected.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        only = None
        if command.uid:
            only = {uid for _, uid in self.selected.resolve(command.args[0], True)}
        self.selected.expunge(only)

    def targets(self, command, sequence):
        try:
            return self.selected.resolve(sequence, command.uid)
        except IndexError:
            raise Bad("message number out of range") from None

    def cmd_fetch(self, command):
        sequence, atts = command.args
        selected = self.selected
        wanted = list(atts)
        if command.uid and not any(a.name == "UID" for a in wanted):
            wanted.insert(0, parser.FetchAtt("UID"))
        needs_content = any(a.name not in ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE") for a in wanted)
        sets_seen = not selected.readonly and any(a.sets_seen for a in wanted)
        targets = self.targets(command, sequence)
        self.announce_flags()
        if [a.name for a in wanted] in (["UID", "FLAGS"], ["FLAGS", "UID"], ["FLAGS"]):
            self._fetch_flags(targets, wanted[0].name == "UID", len(wanted) == 2)
            gone = False
        elif needs_content:
            gone = False
            for batch, copies in self.read_batches(targets, copied=True):
                try:
                    gone |= self._fetch_each(batch, wanted, sets_seen, copies)
                finally:
                    copies.close()
        else:
            gone = self._fetch_each(targets, wanted, sets_seen, selected.box)
        selected.write_back()
        if gone:
            return EXPUNGE_ISSUED

    def announce_flags(self, keywords=()):
        """`* FLAGS` and PERMANENTFLAGS first, when a FETCH is about to show a keyword not announced yet."""
        for parts in self.selected.flags_news(keywords):
            self.send(*parts)

    def read_batches(self, targets, *, copied=False):
        """Targets in batches, each read under a read lock with fresh offsets: (batch, where to read them).

        Message offsets are only valid while nobody rewrites the file, but a
        FETCH of a whole big mailbox must not keep deliveries waiting: the
        lock is let go between batches of about LOCK_BATCH_BYTES.  With
        COPIED the batch's messages are copied out and the lock let go
        before the batch is used, so a client that stops reading never
        holds up deliveries to its mailbox.
        """
        selected = self.selected
        start = 0
        retried = False
        while start < len(targets):
            with selected.box.reading():
                selected.refresh_positions()
                size, end, messages = 0, start, []
                while end < len(targets) and (end == start or size < LOCK_BATCH_BYTES):
                    msg = selected.messages.get(targets[end][1])
                    if msg is not None:
                        size += msg.size
                        messages.append(msg)
                    end += 1
                if not copied:
                    yield targets[start:end], selected.box
                    start = end
                    continue
                try:
                    copies = selected.box.copies(messages)
                except mbox.StaleOffsets:       # changed in a way the file's key did not show: read it again
                    if retried:
                        raise
                    retried = True
                    selected.forget_positions()
                    continue
            yield targets[start:end], copies
            start, retried = end, False

    def _fetch_flags(self, targets, uid_first, with_uid):
        """The commonest FETCH of all (a client syncing flags), without the general machinery."""
        selected = self.selected
        texts = {}
        lines = []
        for seq, uid in targets:  # a message expunged elsewhere, not yet announced, keeps its flags
            letters, keywords = selected.flags_of(uid)
            key = (letters, keywords, uid in selected.recent)
            flags = texts.get(key)
            if flags is None:
                flags = texts[key] = _plain(flag_names(*key))
            if not with_uid:
                lines.append(f"* {seq} FETCH (FLAGS {flags})\r\n")
            elif uid_first:
                lines.append(f"* {seq} FETCH (UID {uid} FLAGS {flags})\r\n")
            else:
                lines.append(f"* {seq} FETCH (FLAGS {flags} UID {uid})\r\n")
            if len(lines) >= 1024:
                self.conn.write("".join(lines).encode("utf-8", "surrogateescape"))
                lines.clear()
        self.conn.write("".join(lines).encode("utf-8", "surrogateescape"))

    def _fetch_each(self, targets, wanted, sets_seen, source):
        """FETCH responses for the targets; True when one was expunged by another session meanwhile."""
        selected = self.selected
        gone = False
        for seq, uid in targets:
            msg = selected.messages.get(uid)
            if msg is None:
                gone = True
                self._fetch_expunged(seq, uid, wanted)
                continue
            fetcher = None
            items = []
            show_flags = False
            if sets_seen and "R" not in selected.flags_of(uid)[0]:
                selected.change_flags(uid, SEEN)
                show_flags = True
            for att in wanted:
                if att.name == "UID":
                    items += ["UID", uid]
                elif att.name == "FLAGS":
                    show_flags = False
                    items += ["FLAGS", selected.imap_flags(uid)]
                else:
                    fetcher = fetcher or MessageFetcher(source, msg)
                    items += [att.response_name(), fetcher.item(att)]
            if show_flags:
                items += ["FLAGS", selected.imap_flags(uid)]
            if fetcher is None:  # UID, FLAGS, INTERNALDATE only: plain text, no serialiser
                self.send_line(f"* {seq} FETCH ({' '.join(map(_plain, items))})")
            else:
                self.send(str(seq), "FETCH", items)
        return gone

    def _fetch_expunged(self, seq, uid, wanted):
        """A message expunged elsewhere but still in the client's view: what is known of it, as Dovecot does.

        UID and FLAGS come from the view; its content is gone, so body
        sections are NIL and the rest is left out; the tagged OK carries
        EXPUNGEISSUED.
        """
        items = []
        for att in wanted:
            if att.name == "UID":
                items += ["UID", uid]
            elif att.name == "FLAGS":
                items += ["FLAGS", self.selected.imap_flags(uid)]
            elif att.section is not None or att.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
                items += [att.response_name(), None]
        self.send(str(seq), "FETCH", items)

    def cmd_store(self, command):
        sequence, store = command.args
        selected = self.selected
        if selected.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        for name in store.flags:
            if not name.startswith("\\") and not mbox.valid_keyword(name):
                raise Bad(f"invalid keyword {name}")
            if name.startswith("\\") and name.lower() not in (f.lower() for f in SYSTEM_FLAG_NAMES):
                raise Bad(f"unknown system flag {name}")
        letters, keywords = split_flags(store.flags)
        change = FlagChange(store.mode, frozenset(letters), tuple(keywords))
        targets = self.targets(command, sequence)
        written = selected.store([uid for _, uid in targets], change, silent=store.silent)
        if not store.silent:
            self.announce_flags(k for _, names in written.values() for k in names)
            for seq, uid in targets:
                if uid in written:
                    items = ["FLAGS", selected.imap_flags(uid)]
                    if command.uid:
                        items = ["UID", uid] + items
                    self.send(str(seq), "FETCH", items)
        if len(written) < len(targets):
            return EXPUNGE_ISSUED

    def cmd_search(self, command):
        charset, key = command.args
        selected = self.selected
        predicate = compile_search(key)
        needs_content = _search_reads_content(key)
        largest_uid = selected.uids[-1] if selected.uids else 0
        found = []

        def run(batch, source):
            for seq, uid in batch:
                msg = selected.messages.get(uid)
                if msg is None:
                    continue
                letters, keywords = selected.flags_of(uid)
                fetcher = MessageFetcher(source, msg)
                ctx = SearchContext(
                    seq, uid, set(flag_names(letters, keywords)), uid in selected.recent, msg.date,
                    fetcher.size, fetcher.client, len(selected.uids), largest_uid,
                )
                if predicate(ctx):
                    found.append(str(uid if command.uid else seq))

        everything = list(enumerate(selected.uids, 1))
        if needs_content:
            for batch, source in self.read_batches(everything):
                run(batch, source)
        else:
            run(everything, selected.box)
        self.send("SEARCH", *found)

    def cmd_copy(self, command, move=False):
        sequence, target_name = command.args
        selected = self.selected
        targets = [(seq, uid) for seq, uid in self.targets(command, sequence) if uid in selected.messages]
        if move and selected.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        try:
            target = self.store.open_for_append(target_name)
        except (NoSuchMailbox, MailboxNameError):
            raise No("[TRYCREATE] no such mailbox") from None
        if target.path == selected.box.path:  # one Mailbox per file: its locks are re-entrant
            target.close()
            target = selected.box
        selected.write_back()
        source_uids, new_uids = [], []
        # both locks, always in the order of the files' paths: two sessions copying in
        # opposite directions would otherwise each hold one and wait out the lock timeout
        first, second = sorted((selected.box, target), key=lambda box: box.path)
        try:
            with first.locked(), second.locked():
                selected.refresh_positions()
                for _, uid in targets:
                    msg = selected.messages.get(uid)
                    if msg is None:
                        continue
                    data = selected.box.read(msg)
                    new_uids.append(  # the flags the file holds: this session's were written just above
                        target.append(
                            data, sender=msg.sender, date=msg.date, flags=frozenset(msg.flags) - {"O"},
                            keywords=msg.keywords, assign_uid=True,
                        )
                    )
                    source_uids.append(uid)
                uidvalidity = target.scan().uidvalidity
                if move and source_uids:
                    index = selected.box.sync(expunge=source_uids)
                    selected.reload(index)
        finally:
            if target is not selected.box:
                target.close()
        if not source_uids:
            return f"{command.name} completed"
        code = f"[COPYUID {uidvalidity} {_uid_set(source_uids)} {_uid_set(new_uids)}]"
        if move:
            self.send("OK", code, "moved")
            return f"{command.name} completed"
        return f"{code} {command.name} completed"

    def cmd_move(self, command):
        return self.cmd_copy(command, move=True)


def mailbox_name(name):
    """A mailbox name in a response: an atom when it is one, else quoted or a literal."""
    return astring(name).decode("utf-8", "surrogateescape")


def _plain(value):
    """UID numbers, flag lists and atoms as protocol text."""
    if isinstance(value, tuple):
        return "(" + " ".join(value) + ")"
    return str(value)


def _uid_set(uids):
    """Compact UID set text: 1:3,7."""
    out, start, prev = [], None, None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            out.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)


def _search_reads_content(key):
    name = key[0]
    if name in ("AND",):
        return any(_search_reads_content(k) for k in key[1])
    if name in ("OR",):
        return _search_reads_content(key[1]) or _search_reads_content(key[2])
    if name == "NOT":
        return _search_reads_content(key[1])
    return name in ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER", "LARGER", "SMALLER",
                    "SENTBEFORE", "SENTON", "SENTSINCE")

