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

import time
from collections import namedtuple

from ..server import auth, connection
from ..store import mailbox as mbox
from ..store.locking import LockTimeout
from . import parser
from .framing import Framing
from .mailbox_commands import MailboxCommands
from .message_commands import MessageCommands
from .response import untagged
from .selected import UidValidityChanged
from .states import ANSWERED, ANY, AUTH, NOT_AUTH, SELECTED, Bad, No, State, storage_failure


class Entry(namedtuple("Entry", "handler states")):
    """A row of the command table: the Session method (a name) and the states (a frozenset) it is valid in."""

    __slots__ = ()


# Seconds after which a command was big work (a FETCH or SEARCH of thousands of messages): the memory it
# freed then goes back to the system, so a session stays as small after it as before (about 0.1 ms).
LONG_COMMAND = 0.05


def _release_freed():
    from ..core import memory  # ctypes: loaded by the few sessions that run big commands (-d has it already)
    memory.release_freed()


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




class Session(Framing, MailboxCommands, MessageCommands):
    """One client's session: the loop, the command table, the state and the output."""

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


    def execute(self, data):
        started = time.monotonic()
        try:
            self.execute_parsed(data)
        finally:
            for spool in self.spooled.values():
                spool.close()
            self.spooled = {}
            if time.monotonic() - started >= LONG_COMMAND:
                _release_freed()

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
