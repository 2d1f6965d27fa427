"""The IMAP commands of any state, of login, and on mailboxes as a whole (RFC 3501 6.1-6.3, IDLE, ID).

CAPABILITY, NOOP, LOGOUT, ID; STARTTLS, LOGIN, AUTHENTICATE before login;
SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB,
NAMESPACE, STATUS, APPEND and IDLE once authenticated.  Names are confined
to the user's mail directory by mailboxes.MailStore; the session drops to
the user before any mailbox is opened.
"""


import time

from ..server import auth, connection
from ..store import mailbox as mbox
from ..store.locking import LockTimeout
from ..store.prepare import DeliveryError, prepare
from .mailboxes import MailboxNameError, MailStore, NoSuchMailbox
from .response import mailbox_name
from .selected import SYSTEM_FLAG_NAMES, SelectedMailbox, scan_with_uids, split_flags
from .states import ANSWERED, Bad, No, State

VERSION = "0.1.0"
# What sessions import only when a command needs it (IDLE's inotify, FETCH's MIME parser, SEARCH's
# decoders): loaded before a root session drops to the user, who may not be able to read them.
LOADED_LATER = tuple(f"{__package__}.{name}" for name in ("idle", "fetch", "search"))


class MailboxCommands:
    """The handlers of these commands; mixed into Session (session.py)."""

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

    def cmd_starttls(self, command):
        if self.tls_context is None or self.conn.is_tls:
            raise Bad("STARTTLS is not available")
        self.tagged(command.tag, "OK", "begin TLS negotiation now")
        try:
            self.conn.starttls(self.tls_context)
        except OSError as exc:                  # ssl.SSLError among them
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
        auth.drop_privileges(user, self.cfg, preload=LOADED_LATER)
        self.user = user
        self.store = MailStore(self.cfg, user)
        self.state = State.AUTHENTICATED
        self.conn.end_login_phase()

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
        unseen = selected.first_unseen()
        if unseen:
            self.send("OK", f"[UNSEEN {unseen}]", "First unseen.")
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
                "MESSAGES": index.count,
                "RECENT": index.count_without("O"),
                "UIDNEXT": index.uidnext,
                "UIDVALIDITY": index.uidvalidity,
                "UNSEEN": index.count_without("R"),
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
        from .idle import MailboxWatcher  # pyinotify: only for IDLE
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
