"""One ESMTP server session (RFC 5321), from greeting to QUIT.

The protocol is the table `COMMANDS`: each verb names its handler and the
states it is valid in; a verb outside its states gets `503 5.5.1` and
changes nothing.  The session runs over a `server.Connection` (a socket,
TLS or not, or stdin/stdout for `sendmail -bs`) and hands each accepted
message to the queue, answering 250 only once the queue has it on disk.

Security stance, command by command:
- A client that talks before the greeting is dropped (spamware does).
- Command lines are bounded (`max_line_length`); an overlong line, a NUL,
  an unknown or malformed command counts as an error, and `max_errors`
  errors end the session with 421.  The Connection's limits (a deadline
  per line, one for everything before the first MAIL with a budget of
  command lines, see server/connection.py) end it with 421 too; `data_timeout` is
  passed down as the deadline of every data line.
- RCPT applies the relay policy: local domains are always accepted; other
  domains only from `relay_networks` or after AUTH; all else `554 5.7.1`.
  A local recipient that does not exist gets `550 5.1.1` at once, so no
  bounce ever goes to a forged sender (backscatter).
  The submission port requires AUTH before MAIL.
- AUTH PLAIN and LOGIN are offered only over TLS or from loopback, so a
  password never crosses a network in clear text.
- DATA ends only at CRLF.CRLF.  A bare CR or LF anywhere in the data (the
  SMTP smuggling family, CVE-2023-51764) gets the message rejected once the
  real end arrives, so a smuggled second message is never seen as commands.
  NUL bytes are rejected the same way; an oversized message is read to its
  end and refused with `552 5.3.4`.
- Input sent ahead of the 354 reply to DATA, or on a server that did not
  offer PIPELINING (after HELO), is a synchronisation error: 554, closed.
  Plaintext sent ahead of the TLS handshake is thrown away by the
  Connection (no command injection across STARTTLS).
"""

import base64
import binascii
import enum
import ipaddress
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from email.utils import formatdate

from ...server.auth import decode_sasl_plain
from ...server.connection import IdleTimeout, LineTooLong, PeerGone, TooManyCommands
from ..queueid import new_id

MAX_DATA_LINE = 1 << 20          # far beyond RFC 5321's 1000, which real mail exceeds
SPOOL_IN_MEMORY = 1 << 20


class State(enum.Enum):
    CONNECTED = "connected"       # greeted, no HELO/EHLO yet
    READY = "ready"               # after HELO/EHLO or RSET: no transaction
    MAIL = "mail"                 # MAIL given, no recipient yet
    RCPT = "rcpt"                 # at least one recipient accepted


ANY = frozenset(State)


@dataclass(frozen=True)
class Command:
    handler: str
    states: frozenset
    answer_first: bool = False    # RFC 2920 3.1: the client must wait for this reply before sending more
    junk: bool = False            # costs nothing, moves nothing: counted against max_junk_commands


COMMANDS = {
    "EHLO": Command("smtp_EHLO", ANY),
    "HELO": Command("smtp_HELO", ANY),
    "MAIL": Command("smtp_MAIL", frozenset({State.READY})),
    "RCPT": Command("smtp_RCPT", frozenset({State.MAIL, State.RCPT})),
    "DATA": Command("smtp_DATA", frozenset({State.RCPT}), answer_first=True),
    "RSET": Command("smtp_RSET", ANY, junk=True),
    "NOOP": Command("smtp_NOOP", ANY, junk=True),
    "QUIT": Command("smtp_QUIT", ANY),
    "VRFY": Command("smtp_VRFY", ANY, junk=True),
    "EXPN": Command("smtp_EXPN", ANY),
    "HELP": Command("smtp_HELP", ANY, junk=True),
    "STARTTLS": Command("smtp_STARTTLS", frozenset({State.CONNECTED, State.READY})),
    "AUTH": Command("smtp_AUTH", frozenset({State.READY})),
}

# Replies that are the same wherever they occur.
R_OK = "250 2.0.0 Ok"
R_BAD_SEQUENCE = "503 5.5.1 Bad sequence of commands"
R_UNKNOWN = "500 5.5.2 Command not recognized"
R_LINE_TOO_LONG = "500 5.5.6 Line too long"
R_NUL = "500 5.5.2 NUL character in command"
R_PARAM_SYNTAX = "501 5.5.4 Syntax error in parameters or arguments"
R_TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
R_TIMEOUT = "421 4.4.2 Timeout, closing connection"
R_TOO_MANY_COMMANDS = "421 4.7.0 Too many commands before MAIL, closing connection"
R_TOO_MUCH_JUNK = "421 4.7.0 Too many commands that do nothing, closing connection"
R_TOO_MANY_AUTH_FAILURES = "421 4.7.0 Too many failed authentications, closing connection"
R_SYNC = "554 5.5.0 Protocol synchronization error (commands sent ahead of replies)"
R_PREGREET = "554 5.5.0 Protocol error: you talked before my greeting"
R_RELAY_DENIED = "554 5.7.1 Relay access denied"
R_UNKNOWN_USER = "550 5.1.1 <{}>: Recipient address rejected: User unknown in local recipient table"
R_AUTH_REQUIRED = "530 5.7.0 Authentication required"
R_TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
R_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
R_BARE_NEWLINE = "550 5.5.2 Bare CR or LF in message text (RFC 5321 section 2.3.8)"
R_NUL_IN_DATA = "550 5.6.0 NUL character in message text"
R_QUEUE_FULL = "452 4.3.1 Insufficient system storage"
R_QUEUE_ERROR = "451 4.3.0 Temporary failure queueing the message, try again later"
R_DATA_LINE_TOO_LONG = "554 5.6.0 Line too long in message text"
R_LOOP = "554 5.4.6 Too many hops (mail loop)"

_PATH = re.compile(r"\s*<(?P<path>[^<>]*)>(?P<params>(?:\s.*)?)$")
_BARE_PATH = re.compile(r"\s*(?P<path>[^<>\s]+)(?P<params>(?:\s.*)?)$")
_DOMAIN = re.compile(r"(?:\[[^\[\]\\\s]+\]|[^\s@<>()\[\]\\,;:\"]+)")
_LOCAL_UNQUOTED = re.compile(r"[^\s@<>()\[\]\\,;:\"]+")
_LOCAL_QUOTED = re.compile(r'"(?:[^"\\\r\n]|\\[\x20-\x7e])*"')


class SmtpError(Exception):
    """A command fails with this reply; the session goes on."""

    def __init__(self, reply):
        super().__init__(reply)
        self.reply = reply


class Disconnect(Exception):
    """End the session after sending `reply` (None: send nothing)."""

    def __init__(self, reply=None):
        super().__init__(reply)
        self.reply = reply


@dataclass
class Envelope:
    """The transaction being built by MAIL and RCPT."""

    sender: str = ""
    recipients: list = field(default_factory=list)
    body: str = "7BIT"
    smtputf8: bool = False
    declared_size: int = 0
    client: str = ""
    auth_user: str | None = None
    started: float = field(default_factory=time.time)     # MAIL: the message's arrival, for the logs' delays


@dataclass
class Policy:
    """What this listener allows: the settings a session needs beyond cfg."""

    hostname: str
    local_domains: tuple
    relay_networks: tuple
    max_recipients: int
    max_message_size: int
    max_line_length: int
    max_errors: int
    max_junk_commands: int
    command_timeout: float
    data_timeout: float
    max_hops: int
    smtputf8: bool = True
    submission: bool = False
    reject_bare_newlines: bool = True   # else bare CR and LF become line ends (never the end of data)
    lf_line_ends: bool = False          # sendmail -bs: a terminal or script ends lines with LF
    enforce_sync: bool = True           # False for sendmail -bs: scripts write everything at once
    greeting_delay: float = 0.0

    @classmethod
    def from_config(cls, cfg, **overrides):
        s = cfg.smtp
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in s.relay_networks)
        values = dict(hostname=cfg.hostname, local_domains=cfg.local_domains, relay_networks=networks,
                      max_recipients=s.max_recipients, max_message_size=s.max_message_size,
                      max_line_length=s.max_line_length, max_errors=s.max_errors,
                      max_junk_commands=s.max_junk_commands,
                      command_timeout=s.command_timeout, data_timeout=s.data_timeout,
                      max_hops=s.max_hops, smtputf8=s.smtputf8,
                      reject_bare_newlines=s.reject_bare_newlines, greeting_delay=s.greeting_delay)
        values.update(overrides)
        return cls(**values)


class Session:
    """The server side of one SMTP connection.

    `enqueue(envelope, data_file, received)` stores a message durably and
    returns its queue id, raising one of QUEUE_FULL (452) or QUEUE_ERRORS
    or OSError (451); `authenticate
    (user, password)` returns a user name or None; `tls_context` enables
    STARTTLS; `local_user` marks a `sendmail -bs` session by a local user;
    `known_recipient(address)`, if given, says whether a local address
    exists (recipients.py)."""

    def __init__(self, conn, policy, *, enqueue, logger, authenticate=None, tls_context=None,
                 plaintext_ok=lambda conn: conn.is_tls or conn.is_loopback(),
                 local_user=None, queue_full=(), queue_errors=(), known_recipient=None):
        self.conn = conn
        self.policy = policy
        self.enqueue = enqueue
        self.logger = logger
        self.authenticate = authenticate
        self.plaintext_ok = plaintext_ok
        self.tls_context = tls_context
        self.local_user = local_user
        self.known_recipient = known_recipient
        self.queue_full = tuple(queue_full)
        self.queue_errors = (OSError, *queue_errors)
        self.state = State.CONNECTED
        self.helo = None
        self.esmtp = False
        self.auth_user = None
        self.errors = 0
        self.junk = 0
        self.envelope = None
        self.client_ip = conn.peer[0] if conn.peer else None
        self.client_name = _reverse_name(self.client_ip) if self.client_ip else "localhost"
        self.client_text = f"{self.client_name}[{self.client_ip or '127.0.0.1'}]" if self.client_ip \
            else f"local user {local_user or 'unknown'}"

    # --- the loop ---------------------------------------------------------

    def run(self):
        """Greet, then serve commands until QUIT, an error limit, a timeout or EOF."""
        self.logger.info("connect from %s", self.client_text)
        self.conn.set_timeout(self.policy.command_timeout)
        try:
            if self.policy.enforce_sync and _talks_first(self.conn, self.policy.greeting_delay):
                raise Disconnect(R_PREGREET)
            self.reply(f"220 {self.policy.hostname} ESMTP mailsuite")
            while True:
                self.one_command()
        except Disconnect as stop:
            if stop.reply:
                self.reply(stop.reply)
        except IdleTimeout:
            self.logger.info("timeout after %s from %s", self.state.value, self.client_text)
            self._try_reply(R_TIMEOUT)
        except TooManyCommands:
            self.logger.info("too many commands before MAIL from %s", self.client_text)
            self._try_reply(R_TOO_MANY_COMMANDS)
        except PeerGone:
            self.logger.info("lost connection after %s from %s", self.state.value, self.client_text)
        self._try_flush()
        self.logger.info("disconnect from %s", self.client_text)

    def one_command(self):
        try:
            line = self.conn.readline(self.policy.max_line_length)
        except LineTooLong:
            return self.fail(R_LINE_TOO_LONG)
        text = self._command_text(line)
        if text is None:
            return None
        verb, _, argument = text.partition(" ")
        command = COMMANDS.get(verb.upper())
        if command is None:
            return self.fail(R_UNKNOWN)
        if self.state not in command.states:
            return self.fail(R_BAD_SEQUENCE)
        if self.policy.enforce_sync and self._pipelined_out_of_turn(command):
            raise Disconnect(R_SYNC)
        if command.junk:
            self.junk += 1
            if self.junk > self.policy.max_junk_commands:
                raise Disconnect(R_TOO_MUCH_JUNK)
        try:
            getattr(self, command.handler)(argument.strip())
        except SmtpError as exc:
            self.fail(exc.reply)
        return None

    def _pipelined_out_of_turn(self, command):
        """Input already waiting after a command that must be answered first (RFC 2920 3.1).

        What follows DATA must wait for the 354; without PIPELINING (a HELO
        session) nothing may be sent ahead.  Text sent with STARTTLS is
        dropped by the Connection instead."""
        if not self.conn.has_pending_input():
            return False
        return command.answer_first or (self.helo is not None and not self.esmtp)

    def _command_text(self, line):
        """The command line as text, or None after replying to a malformed one."""
        if b"\0" in line:
            return self.fail(R_NUL)
        stripped = line.rstrip(b"\r\n")
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            return self.fail(R_PARAM_SYNTAX)
        if not text.strip():
            return self.fail(R_UNKNOWN)
        if "\r" in text:
            return self.fail(R_PARAM_SYNTAX)
        return text.lstrip()

    def fail(self, reply):
        """Send an error reply; too many of them end the session."""
        self.errors += 1
        if self.errors > self.policy.max_errors:
            raise Disconnect(R_TOO_MANY_ERRORS)
        self.reply(reply)
        return None

    def reply(self, text):
        self.conn.write(text.encode("utf-8") + b"\r\n")

    def _try_reply(self, text):
        try:
            self.reply(text)
            self.conn.flush()
        except (PeerGone, IdleTimeout):
            pass

    def _try_flush(self):
        try:
            self.conn.flush()
        except (PeerGone, IdleTimeout):
            pass

    # --- session commands -------------------------------------------------

    def smtp_EHLO(self, argument):
        self._greet(argument, esmtp=True)
        lines = [f"{self.policy.hostname} Hello {self.client_name}", "PIPELINING",
                 f"SIZE {self.policy.max_message_size}" if self.policy.max_message_size else "SIZE",
                 "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.policy.smtputf8:
            lines.append("SMTPUTF8")
        if self._starttls_available():
            lines.append("STARTTLS")
        if self._auth_available():
            lines.append("AUTH PLAIN LOGIN")
        self.reply("\r\n".join(f"250-{line}" for line in lines[:-1]) + f"\r\n250 {lines[-1]}")

    def smtp_HELO(self, argument):
        self._greet(argument, esmtp=False)
        self.reply(f"250 {self.policy.hostname}")

    def _greet(self, argument, *, esmtp):
        if not argument or " " in argument or not _DOMAIN.fullmatch(argument):
            raise SmtpError("501 5.5.4 Syntax: EHLO hostname" if esmtp else "501 5.5.4 Syntax: HELO hostname")
        self.helo = argument
        self.esmtp = esmtp
        self._reset()

    def smtp_RSET(self, argument):
        if argument:
            raise SmtpError(R_PARAM_SYNTAX)
        if self.state is not State.CONNECTED:
            self._reset()
        self.reply(R_OK)

    def _reset(self):
        self.envelope = None
        self.state = State.READY

    def smtp_NOOP(self, argument):
        self.reply(R_OK)

    def smtp_QUIT(self, argument):
        raise Disconnect(f"221 2.0.0 {self.policy.hostname} closing connection")

    def smtp_VRFY(self, argument):
        if not argument:
            raise SmtpError(R_PARAM_SYNTAX)
        self.reply("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_EXPN(self, argument):
        self.reply("502 5.5.1 EXPN not available")

    def smtp_HELP(self, argument):
        self.reply("214-2.0.0 Commands: " + " ".join(COMMANDS) + "\r\n"
                   "214 2.0.0 See RFC 5321; report problems to postmaster")

    # --- TLS and AUTH -----------------------------------------------------

    def _starttls_available(self):
        return self.tls_context is not None and not self.conn.is_tls and self.conn.peer is not None

    def smtp_STARTTLS(self, argument):
        if argument:
            raise SmtpError(R_PARAM_SYNTAX)
        if not self._starttls_available():
            raise SmtpError("502 5.5.1 STARTTLS not available" if not self.conn.is_tls
                            else "503 5.5.1 TLS already active")
        self.reply("220 2.0.0 Ready to start TLS")
        self.conn.starttls(self.tls_context)
        self.logger.info("STARTTLS with %s", self.client_text)
        self.state, self.helo, self.esmtp, self.envelope = State.CONNECTED, None, False, None

    def _auth_available(self):
        return (self.authenticate is not None and self.auth_user is None and self.conn.peer is not None
                and self.plaintext_ok(self.conn))

    def smtp_AUTH(self, argument):
        if self.auth_user is not None:
            raise SmtpError("503 5.5.1 Already authenticated")
        if not self._auth_available():
            raise SmtpError("538 5.7.11 Encryption required for requested authentication mechanism")
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            user, password = self._auth_plain(initial.strip())
        elif mechanism == "LOGIN":
            user, password = self._auth_login(initial.strip())
        else:
            raise SmtpError("504 5.5.4 Unrecognized authentication type")
        name = self.authenticate(user, password)
        if name is None:
            self.logger.info("authentication failed: user=%s from %s", user, self.client_text)
            raise SmtpError("535 5.7.8 Authentication credentials invalid")
        self.auth_user = name
        self.logger.info("authenticated: user=%s from %s", name, self.client_text)
        self.reply("235 2.7.0 Authentication successful")

    def _auth_plain(self, initial):
        try:
            _, user, password = decode_sasl_plain(initial or self._challenge(""))
        except ValueError as exc:
            raise SmtpError(f"501 5.5.2 Malformed PLAIN response: {exc}") from None
        return user, password

    def _auth_login(self, initial):
        user = _b64(initial) if initial else _b64(self._challenge("VXNlcm5hbWU6"))
        password = _b64(self._challenge("UGFzc3dvcmQ6"))
        return _utf8(user), _utf8(password)

    def _challenge(self, prompt):
        self.reply(f"334 {prompt}".rstrip() if prompt else "334 ")
        try:
            line = self.conn.readline(self.policy.max_line_length * 4)
        except LineTooLong:
            raise SmtpError("500 5.5.6 Authentication exchange line too long") from None
        answer = line.rstrip(b"\r\n").decode("ascii", "replace")
        if answer == "*":
            raise SmtpError("501 5.0.0 Authentication cancelled")
        return answer

    # --- the transaction --------------------------------------------------

    def smtp_MAIL(self, argument):
        if self.policy.submission and self.auth_user is None:
            raise SmtpError(R_AUTH_REQUIRED)
        path, params = self._path_and_params(argument, "FROM")
        if params and not self.esmtp:
            raise SmtpError("555 5.5.4 Parameters need EHLO, not HELO")
        envelope = Envelope(sender=path, client=self.client_text, auth_user=self.auth_user)
        for name, value in params.items():
            if name == "SIZE":
                if not (value and value.isascii() and value.isdigit()):
                    raise SmtpError("501 5.5.4 Bad SIZE value")
                envelope.declared_size = int(value)
            elif name == "BODY" and value and value.upper() in ("7BIT", "8BITMIME"):
                envelope.body = value.upper()
            elif name == "SMTPUTF8" and value is None and self.policy.smtputf8:
                envelope.smtputf8 = True
            elif name == "AUTH" and value:
                pass                    # RFC 4954 5: the submitter's identity; we record our own
            else:
                raise SmtpError("555 5.5.4 Unsupported option: " + name)
        if not path.isascii() and not envelope.smtputf8:
            raise SmtpError("553 5.6.7 Non-ASCII address requires SMTPUTF8")
        if path and not _valid_address(path):
            raise SmtpError("553 5.1.7 Bad sender address syntax")
        limit = self.policy.max_message_size
        if limit and envelope.declared_size > limit:
            raise SmtpError(R_TOO_BIG)
        self.envelope = envelope
        self.state = State.MAIL
        self.conn.end_login_phase()
        self.reply("250 2.1.0 Ok")

    def smtp_RCPT(self, argument):
        path, params = self._path_and_params(argument, "TO")
        if params:
            raise SmtpError("555 5.5.4 Unsupported option: " + next(iter(params)))
        if not path.isascii() and not self.envelope.smtputf8:
            raise SmtpError("553 5.6.7 Non-ASCII address requires SMTPUTF8")
        if path.lower() == "postmaster":
            path = f"postmaster@{self.policy.hostname}"
        if not _valid_address(path):
            raise SmtpError("501 5.1.3 Bad recipient address syntax")
        if len(self.envelope.recipients) >= self.policy.max_recipients:
            raise SmtpError(R_TOO_MANY_RCPTS)
        if not self._may_send_to(path):
            self.logger.info("reject: RCPT from %s: relay access denied: from=<%s> to=<%s>",
                             self.client_text, self.envelope.sender, path)
            raise SmtpError(R_RELAY_DENIED)
        if self.known_recipient and self._is_local(path) and not self.known_recipient(path):
            self.logger.info("reject: RCPT from %s: 550 5.1.1 user unknown: from=<%s> to=<%s>",
                             self.client_text, self.envelope.sender, path)
            raise SmtpError(R_UNKNOWN_USER.format(path))
        self.envelope.recipients.append(path)
        self.state = State.RCPT
        self.reply("250 2.1.5 Ok")

    def _is_local(self, address):
        return address.rpartition("@")[2].lower() in self.policy.local_domains

    def _may_send_to(self, address):
        """The relay policy: never an open relay."""
        if self._is_local(address):
            return True
        if self.auth_user is not None or self.local_user is not None:
            return True
        if self.policy.submission:
            return False
        return self._in_relay_networks()

    def _in_relay_networks(self):
        if self.client_ip is None:
            return False
        try:
            address = ipaddress.ip_address(self.client_ip.split("%", 1)[0])
        except ValueError:
            return False
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return any(address.version == net.version and address in net for net in self.policy.relay_networks)

    def _path_and_params(self, argument, keyword):
        """Split 'FROM:<a@b> SIZE=10' into ('a@b', {'SIZE': '10'})."""
        head, colon, rest = argument.partition(":")
        if not colon or head.strip().upper() != keyword:
            raise SmtpError(f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
        match = _PATH.match(rest) or _BARE_PATH.match(rest)
        if not match:
            self._log_bad_path(keyword, rest)
            raise SmtpError("501 5.1.7 Bad address syntax")
        path = match.group("path").strip()
        if path.startswith("@"):                      # source route: RFC 5321 says ignore it
            path = path.partition(":")[2]
        if any(ord(c) < 32 or ord(c) == 127 for c in path):   # even quoted (RFC 5321 4.1.2: qtextSMTP)
            self._log_bad_path(keyword, path)
            raise SmtpError("501 5.1.7 Bad address syntax: control character")
        params = {}
        for item in match.group("params").split():
            name, eq, value = item.partition("=")
            if not name.isascii() or not name.replace("-", "").isalnum():
                raise SmtpError(R_PARAM_SYNTAX)
            params[name.upper()] = value if eq else None
        return path, params

    def _log_bad_path(self, keyword, text):
        command = "MAIL" if keyword == "FROM" else "RCPT"
        self.logger.info("reject: %s from %s: bad address syntax: %s", command, self.client_text, text[:200])

    def smtp_DATA(self, argument):
        if argument:
            raise SmtpError(R_PARAM_SYNTAX)
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        queue_id = new_id()
        received = self._received_header(queue_id)
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as data:
            problem, hops = self._read_data(data)
            envelope, self.envelope, self.state = self.envelope, None, State.READY
            if problem is None and hops >= self.policy.max_hops:
                problem = R_LOOP
            if problem:
                self.logger.info("reject: DATA from %s: %s: from=<%s>", self.client_text, problem, envelope.sender)
                raise SmtpError(problem)
            data.seek(0)
            try:
                queue_id = self.enqueue(envelope, data, received, queue_id)
            except self.queue_full:
                raise SmtpError(R_QUEUE_FULL) from None
            except self.queue_errors as exc:
                self.logger.error("queue: %s", exc)
                raise SmtpError(R_QUEUE_ERROR) from None
        self.logger.info("%s: client=%s, from=<%s>, nrcpt=%d%s", queue_id, self.client_text, envelope.sender,
                         len(envelope.recipients), f", sasl_username={self.auth_user}" if self.auth_user else "")
        self.reply(f"250 2.0.0 Ok: queued as {queue_id}")

    def _read_data(self, out):
        """Copy the message text to OUT (LF line ends, dots unstuffed) until CRLF.CRLF.

        Returns (reply or None, Received: count).  Everything up to the real
        end is read even when the message is refused, so the rest of the
        data is never taken for commands."""
        strict = self.policy.reject_bare_newlines
        limit = self.policy.max_message_size
        deadline = time.monotonic() + self.policy.data_timeout
        size, problem, hops, in_header = 0, None, 0, True
        after_crlf = True                 # the DATA line itself ended in CRLF
        while True:
            try:
                line = self.conn.readline(MAX_DATA_LINE, deadline=deadline)
            except LineTooLong:
                problem = problem or R_DATA_LINE_TOO_LONG
                continue
            if time.monotonic() > deadline:
                raise IdleTimeout()
            if self._ends_data(line, after_crlf):
                return problem, hops
            crlf = line.endswith(b"\r\n")
            after_crlf = crlf
            content = line[:-2] if crlf else line[:-1]
            if problem is None:
                if strict and (not crlf or b"\r" in content):
                    problem = R_BARE_NEWLINE
                elif b"\0" in content:
                    problem = R_NUL_IN_DATA
            if content.startswith(b"."):
                content = content[1:]
            if in_header:
                if not content.strip():
                    in_header = False
                elif content[:9].lower() == b"received:":
                    hops += 1
            line = content.replace(b"\r", b"\n") + b"\n"
            size += len(line)
            if limit and size > limit and problem is None:
                problem = R_TOO_BIG
            if problem is None:
                out.write(line)

    def _ends_data(self, line, after_crlf):
        """Only CRLF.CRLF ends the data on the wire; a terminal (sendmail -bs) may end it with LF.LF."""
        if self.policy.lf_line_ends:
            return line in (b".\n", b".\r\n")
        return line == b".\r\n" and after_crlf

    def _received_header(self, queue_id):
        """Our trace line (RFC 5321 4.4), prepended to the message by the queue.

        Laid out as Postfix writes it, so hop tracers read it: the client,
        the TLS in use, `with` as RFC 3848 names the protocol (ESMTPS,
        ESMTPA, ESMTPSA, UTF8...), and the queue id our logs use.
        """
        protocol = ("UTF8" if self.envelope.smtputf8 else "") + ("ESMTP" if self.esmtp else "SMTP")
        tls = self.conn.tls_parameters()
        if tls:
            protocol += "S"
        if self.auth_user:
            protocol += "A"
        lines = []
        if self.client_ip:
            lines.append(f"from {self.helo or 'unknown'} ({self.client_name} [{self.client_ip}])")
        if tls:
            version, cipher, bits = tls
            lines.append(f"(using {version} with cipher {cipher} ({bits}/{bits} bits))")
        by = f"by {self.policy.hostname} (mailsuite"
        by += ")" if self.client_ip else f", from user {self.local_user or 'unknown'})"   # sendmail -bs
        lines.append(f"{by} with {protocol} id {queue_id}")
        if len(self.envelope.recipients) == 1:
            lines.append(f"for <{self.envelope.recipients[0]}>")
        return "Received: " + "\n\t".join(lines) + f"; {formatdate(localtime=True)}\n"


def _talks_first(conn, delay):
    """Whether a network client sends something before our greeting (within DELAY seconds).

    On pipes (sendmail -bs) the whole session may rightly be there already.
    """
    return conn.local_port is not None and conn.wait_readable(delay)


def _reverse_name(ip):
    """The client's DNS name when it has one that maps back, else 'unknown'."""
    try:
        name = socket.gethostbyaddr(ip)[0]
        if ip in {info[4][0] for info in socket.getaddrinfo(name, None)}:
            return name
    except (OSError, UnicodeError):
        pass
    return "unknown"


def _valid_address(address):
    """local@domain with a sane local part and domain (dot-atom or quoted)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 254:
        return False
    if any(c in address for c in "\r\n\0"):
        return False
    return bool((_LOCAL_QUOTED.fullmatch(local) or _LOCAL_UNQUOTED.fullmatch(local))
                and _DOMAIN.fullmatch(domain))


def _b64(text):
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SmtpError("501 5.5.2 Cannot decode response") from None


def _utf8(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SmtpError("501 5.5.2 Invalid UTF-8 in credentials") from None
