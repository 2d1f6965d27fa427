"""The POP3 protocol (RFC 1939), with CAPA and response codes (RFC 2449),
AUTH PLAIN (RFC 5034) and STLS (RFC 2595).

A session is a state machine written as RFC 1939 describes it: the
`COMMANDS` table names, for each command, its handler and the states it is
valid in; the handler returns the reply.  Errors are a table too
(`ERRORS`), so every client sees the same text for the same condition.

Security: passwords in the clear only inside TLS or from loopback (see
`auth.plaintext_allowed`); the same `[AUTH]` error for every failed login;
privileges dropped to the user before the maildrop is opened; a bounded
command line; a session that keeps sending bad commands, or fails
`max_login_failures` logins, is closed.
"""

import enum
import errno
import os
import time

from ..server import auth
from ..server.connection import IdleTimeout, LineTooLong, TooManyCommands
from ..store.locking import LockTimeout
from ..store.mailbox import MailboxError
from .snapshot import Changed, Gone, InUse, Maildrop, take_session_lock

MAX_COMMAND_LINE = 1024          # RFC 2449 allows 255 octets; we accept more, not unbounded
MAX_SASL_LINE = 8192
MAX_ERRORS = 10                  # bad commands in a row before we hang up
# Imported by the store only for a message too big to copy into memory: loaded before a root session
# drops to the user, who may not be able to read it.
LOADED_LATER = ("mailsuite.store.prepare",)


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


AUTHORIZATION, TRANSACTION = State.AUTHORIZATION, State.TRANSACTION

ERRORS = {
    "unknown": "-ERR unknown command",
    "state": "-ERR command not valid in this state",
    "syntax": "-ERR syntax error",
    "too_long": "-ERR line too long",
    "too_many": "-ERR too many errors; closing connection",
    "no_message": "-ERR no such message",
    "deleted": "-ERR message is deleted",
    "auth_failed": "-ERR [AUTH] invalid user name or password",
    "auth_exhausted": "-ERR [AUTH] invalid user name or password; too many failures, closing connection",
    "plaintext": "-ERR [AUTH] plaintext authentication needs TLS; use STLS",
    "user_first": "-ERR USER first",
    "mechanism": "-ERR unsupported authentication mechanism",
    "cancelled": "-ERR authentication cancelled",
    "bad_sasl": "-ERR invalid SASL response",
    "no_apop": "-ERR APOP is not available",
    "no_tls": "-ERR STLS is not available",
    "tls_active": "-ERR TLS is already active",
    "in_use": "-ERR [IN-USE] mailbox is in use by another POP3 session",
    "lock_busy": "-ERR [SYS/TEMP] mailbox is busy; try again later",
    "unavailable": "-ERR [SYS/PERM] mailbox unavailable; contact the postmaster",
    "storage_full": "-ERR [SYS/TEMP] the mail storage is full; try again later",
    "recovering": "-ERR [SYS/TEMP] the mailbox is being recovered from an interrupted change; try again later",
    "gone": "-ERR [SYS/TEMP] message was removed by another program; reconnect for a new listing",
    "unreadable": "-ERR [SYS/TEMP] the mailbox cannot be read just now; try again later",
    "update_failed": "-ERR [SYS/TEMP] some deleted messages not removed",
    "timeout": "-ERR idle timeout; closing connection",
    "too_many_commands": "-ERR too many commands before login; closing connection",
}


# Failures of the mail storage that may pass: a temporary -ERR, not "contact the postmaster".
TEMPORARY_ERRNOS = {errno.ENOSPC: "storage_full", errno.EDQUOT: "storage_full", errno.EAGAIN: "recovering"}


class Command:
    """A row of the command table: the Session method that handles it and the states it is valid in."""

    __slots__ = ("handler", "states")

    def __init__(self, handler, states):
        self.handler = handler
        self.states = states


class Session:
    """One POP3 client from greeting to QUIT."""

    def __init__(self, conn, cfg, logger, tls_context=None):
        self.conn = conn
        self.cfg = cfg
        self.logger = logger
        self.authenticator = auth.Authenticator(cfg, "pop3", logger)
        self.tls = tls_context if not conn.is_tls else None     # STLS; the daemon loaded the key once
        self.state = AUTHORIZATION
        self.user_name = None            # from USER, awaiting PASS
        self.user = None
        self.maildrop = None
        self.session_lock = None
        self.challenge = None            # APOP's timestamp, when APOP is enabled
        self.done = False

    # --- the loop --------------------------------------------------------

    def run(self):
        greeting = "+OK POP3 server ready"
        if self.authenticator.apop_enabled():
            self.challenge = f"<{os.getpid()}.{time.time_ns()}@{self.cfg.hostname}>"
            greeting += " " + self.challenge
        self.reply(greeting)
        errors = 0
        try:
            while not self.done:
                try:
                    line = self.conn.readline(MAX_COMMAND_LINE)
                except LineTooLong:
                    ok = self.reply(ERRORS["too_long"])
                except IdleTimeout:
                    self.reply(ERRORS["timeout"])
                    break
                except TooManyCommands:
                    self.reply(ERRORS["too_many_commands"])
                    break
                else:
                    ok = self.dispatch(line)
                errors = 0 if ok else errors + 1
                if errors >= MAX_ERRORS:
                    self.reply(ERRORS["too_many"])
                    break
        finally:
            self.close()

    def dispatch(self, line):
        """Run one command line; returns False for an error reply."""
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, argument = text.partition(" ")
        command = COMMANDS.get(verb.upper())
        if command is None:
            return self.reply(ERRORS["unknown"])
        if self.state not in command.states:
            return self.reply(ERRORS["state"])
        return getattr(self, command.handler)(argument)

    def reply(self, text):
        """Send one status line; True for +OK, so handlers can `return self.reply(...)`."""
        self.conn.write(text.encode("utf-8") + b"\r\n")
        return text.startswith("+")

    def multiline(self, first, lines):
        """A status line, then LINES (no dot-stuffing needed: none starts with '.'), then the final '.'."""
        self.reply(first)
        self.conn.write("".join(line + "\r\n" for line in lines).encode() + b".\r\n")
        return True

    def close(self):
        if self.maildrop:
            self.maildrop.close()
        if self.session_lock is not None:
            os.close(self.session_lock)
        self.conn.flush()

    # --- AUTHORIZATION ---------------------------------------------------

    def cmd_capa(self, argument):
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is AUTHORIZATION:
            if auth.plaintext_allowed(self.cfg, self.conn):
                caps += ["USER", "SASL PLAIN"]
            if self.tls and self.conn.can_starttls:
                caps.append("STLS")
        caps += ["EXPIRE NEVER", "IMPLEMENTATION mailsuite"]
        return self.multiline("+OK capability list follows", caps)

    def cmd_stls(self, argument):
        if self.conn.is_tls:
            return self.reply(ERRORS["tls_active"])
        if not self.tls or not self.conn.can_starttls:
            return self.reply(ERRORS["no_tls"])
        self.reply("+OK begin TLS negotiation")
        self.conn.starttls(self.tls)
        self.user_name = None
        return True

    def cmd_user(self, argument):
        if not argument:
            return self.reply(ERRORS["syntax"])
        if not auth.plaintext_allowed(self.cfg, self.conn):
            return self.reply(ERRORS["plaintext"])
        self.user_name = argument
        return self.reply("+OK")

    def cmd_pass(self, argument):
        if self.user_name is None:
            return self.reply(ERRORS["user_first"])
        name, self.user_name = self.user_name, None
        user = self.authenticator.authenticate(name, argument, self.conn.peer)
        return self.login(user)

    def cmd_apop(self, argument):
        if not self.authenticator.apop_enabled():
            return self.reply(ERRORS["no_apop"])
        name, _, digest = argument.rpartition(" ")
        if not name or len(digest) != 32:
            return self.reply(ERRORS["syntax"])
        return self.login(self.authenticator.authenticate_apop(name, self.challenge, digest, self.conn.peer))

    def cmd_auth(self, argument):
        mechanism, _, initial = argument.partition(" ")
        plaintext = auth.plaintext_allowed(self.cfg, self.conn)
        if not mechanism:
            return self.multiline("+OK mechanisms follow", ["PLAIN"] if plaintext else [])
        if mechanism.upper() != "PLAIN":
            return self.reply(ERRORS["mechanism"])
        if not plaintext:
            return self.reply(ERRORS["plaintext"])
        if not initial:
            self.conn.write(b"+ \r\n")
            try:
                initial = self.conn.readline(MAX_SASL_LINE).rstrip(b"\r\n").decode("ascii", "replace")
            except LineTooLong:
                return self.reply(ERRORS["bad_sasl"])
        if initial == "*":
            return self.reply(ERRORS["cancelled"])
        try:
            authzid, authcid, password = auth.decode_sasl_plain(b"" if initial == "=" else initial.encode())
        except ValueError:
            return self.reply(ERRORS["bad_sasl"])
        user = None
        if authzid in ("", authcid):
            user = self.authenticator.authenticate(authcid, password, self.conn.peer)
        return self.login(user)

    def login(self, user):
        """After a successful check: drop to the user, lock and open the maildrop, enter TRANSACTION."""
        if user is None:
            if self.authenticator.exhausted:
                self.done = True
                return self.reply(ERRORS["auth_exhausted"])
            return self.reply(ERRORS["auth_failed"])
        auth.drop_privileges(user, self.cfg, preload=LOADED_LATER)
        try:
            self.session_lock = take_session_lock(self.cfg, user)
            self.maildrop = Maildrop.open(self.cfg, user)
        except InUse:
            return self.fail_login(user, "in_use", "in use by another session")
        except LockTimeout:
            return self.fail_login(user, "lock_busy", "mailbox lock timeout")
        except OSError as exc:
            return self.fail_login(user, TEMPORARY_ERRNOS.get(exc.errno, "unavailable"), str(exc))
        except MailboxError as exc:
            return self.fail_login(user, "unavailable", str(exc))
        self.user, self.state = user, TRANSACTION
        self.conn.end_login_phase()
        count = len(self.maildrop.messages)
        self.logger.info("session: user=%s, rhost=%s, messages=%d", user.name, self.conn.peer_text(), count)
        return self.reply(f"+OK {user.name} has {count} message{'s' if count != 1 else ''}")

    def fail_login(self, user, error, reason):
        """The maildrop cannot be used: we already run as the user, so the session ends here."""
        self.logger.warning("session: user=%s, rhost=%s, error=%s", user.name, self.conn.peer_text(), reason)
        self.done = True
        return self.reply(ERRORS[error])

    # --- TRANSACTION -----------------------------------------------------

    def cmd_stat(self, argument):
        if argument:
            return self.reply(ERRORS["syntax"])
        count, octets = self.maildrop.stat()
        return self.reply(f"+OK {count} {octets}")

    def cmd_list(self, argument):
        if argument:
            number = self.message_number(argument)
            return number and self.reply(f"+OK {number} {self.maildrop.octets(number)}")
        return self.multiline("+OK scan listing follows", self.maildrop.listing("octets"))

    def cmd_uidl(self, argument):
        if argument:
            number = self.message_number(argument)
            return number and self.reply(f"+OK {number} {self.maildrop.uidl(number)}")
        return self.multiline("+OK unique-id listing follows", self.maildrop.listing("uidl"))

    def cmd_retr(self, argument):
        number = self.message_number(argument)
        copied = number and self.copy_of(number)
        if not copied:
            return False
        self.reply(f"+OK {self.maildrop.octets(number)} octets")
        self.maildrop.send(copied, self.conn.write)
        self.conn.write(b".\r\n")
        self.maildrop.retrieved.add(number)
        return True

    def copy_of(self, number):
        """Message NUMBER copied out of the mailbox, or None after a temporary -ERR."""
        try:
            return self.maildrop.copy(number)
        except Gone:
            self.reply(ERRORS["gone"])
        except (LockTimeout, MailboxError, OSError) as exc:
            self.logger.warning("read: user=%s, error=%s", self.user.name, exc)
            self.reply(ERRORS["unreadable"])
        return None

    def cmd_top(self, argument):
        message, _, lines = argument.partition(" ")
        if not lines.isdigit() or len(lines) > 9:
            return self.reply(ERRORS["syntax"])
        number = self.message_number(message)
        copied = number and self.copy_of(number)
        if not copied:
            return False
        self.reply("+OK top of message follows")
        self.maildrop.send(copied, self.conn.write, body_lines=int(lines))
        self.conn.write(b".\r\n")
        return True

    def cmd_dele(self, argument):
        number = self.message_number(argument)
        if not number:
            return False
        self.maildrop.deleted.add(number)
        return self.reply(f"+OK message {number} deleted")

    def cmd_noop(self, argument):
        return self.reply("+OK")

    def cmd_rset(self, argument):
        self.maildrop.deleted.clear()
        count, octets = self.maildrop.stat()
        return self.reply(f"+OK maildrop has {count} messages ({octets} octets)")

    def cmd_quit(self, argument):
        self.done = True
        if self.state is not TRANSACTION:
            return self.reply("+OK bye")
        self.state = State.UPDATE
        deleted = len(self.maildrop.deleted)
        try:
            self.maildrop.commit()
        except (LockTimeout, Changed, MailboxError, OSError) as exc:
            self.logger.error("update: user=%s, error=%s", self.user.name, exc)
            return self.reply(ERRORS["update_failed"])
        self.logger.info("logout: user=%s, retrieved=%d, deleted=%d", self.user.name,
                         len(self.maildrop.retrieved), deleted)
        return self.reply(f"+OK bye ({deleted} message{'s' if deleted != 1 else ''} deleted)")

    def message_number(self, argument):
        """The message number in ARGUMENT if it names a live message; else reply -ERR and return 0."""
        text = argument.strip()
        if not text.isdigit() or len(text) > 9:
            self.reply(ERRORS["syntax"] if not text.isdigit() else ERRORS["no_message"])
            return 0
        number = int(text)
        if not self.maildrop.exists(number):
            self.reply(ERRORS["deleted"] if number in self.maildrop.deleted else ERRORS["no_message"])
            return 0
        return number


BOTH = frozenset({AUTHORIZATION, TRANSACTION})
COMMANDS = {
    "CAPA": Command("cmd_capa", BOTH),
    "QUIT": Command("cmd_quit", BOTH),
    "STLS": Command("cmd_stls", frozenset({AUTHORIZATION})),
    "USER": Command("cmd_user", frozenset({AUTHORIZATION})),
    "PASS": Command("cmd_pass", frozenset({AUTHORIZATION})),
    "APOP": Command("cmd_apop", frozenset({AUTHORIZATION})),
    "AUTH": Command("cmd_auth", frozenset({AUTHORIZATION})),
    "STAT": Command("cmd_stat", frozenset({TRANSACTION})),
    "LIST": Command("cmd_list", frozenset({TRANSACTION})),
    "UIDL": Command("cmd_uidl", frozenset({TRANSACTION})),
    "RETR": Command("cmd_retr", frozenset({TRANSACTION})),
    "TOP": Command("cmd_top", frozenset({TRANSACTION})),
    "DELE": Command("cmd_dele", frozenset({TRANSACTION})),
    "NOOP": Command("cmd_noop", frozenset({TRANSACTION})),
    "RSET": Command("cmd_rset", frozenset({TRANSACTION})),
}


def serve(conn, cfg, logger, tls_context=None):
    """The handler given to the server harness; TLS_CONTEXT (or None) offers STLS."""
    Session(conn, cfg, logger, tls_context).run()
