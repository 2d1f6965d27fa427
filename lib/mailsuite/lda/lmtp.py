"""LMTP (RFC 2033) for mail.local -l: one status per recipient after DATA.

A small command table: each verb with the states it is valid in.  The
message is read dot-unstuffed into a temporary file, prepared once, and
appended to each accepted recipient's spool.  After DATA comes exactly one
reply per accepted RCPT, in RCPT order (RFC 2033 4.2), whatever happens:
a message too big, one that cannot be prepared, or a local error gives
each recipient its own reply, never one multi-line reply, so an LMTP
client is never left waiting for the rest.

The session runs over the servers' Connection (server/connection.py):
every command line is bounded, and every line, command or data, must
arrive within `[delivery] lmtp_timeout`; a client that stalls gets 421
and the session ends, with nothing promised for a message not finished.
"""

import re

from ..core.address import user_part
from ..server.connection import IdleTimeout, LineTooLong, PeerGone
from ..store.prepare import DeliveryError, prepare, temporary_file
from .deliver import deliver

MAX_COMMAND = 2048
MAX_RECIPIENTS = 1000
DATA_PIECE = 1 << 20            # message lines are kept whole whatever their length, read this much at a time
_PATH = re.compile(r"<([^<>\s]*)>(?:\s+(.*))?$")

# states
GREETED, READY, MAIL, RCPT = "greeted", "ready", "mail", "rcpt"


class LMTPSession:
    def __init__(self, cfg, userdb, logger, conn):
        self.cfg, self.userdb, self.logger = cfg, userdb, logger
        self.conn = conn
        self.state = GREETED
        self.sender = None
        self.recipients = []
        self.commands = {
            "LHLO": (self.lhlo, {GREETED, READY, MAIL, RCPT}),
            "MAIL": (self.mail, {READY}),
            "RCPT": (self.rcpt, {MAIL, RCPT}),
            "DATA": (self.data, {RCPT}),
            "RSET": (self.rset, {GREETED, READY, MAIL, RCPT}),
            "NOOP": (self.noop, {GREETED, READY, MAIL, RCPT}),
            "VRFY": (self.vrfy, {GREETED, READY, MAIL, RCPT}),
        }

    def reply(self, *lines):
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            self.conn.write(f"{line[:3]}{sep}{line[4:]}\r\n".encode())
        self.conn.flush()

    def run(self):
        """The session to its end: QUIT, the client gone, or a line that did not come in time."""
        try:
            self.reply(f"220 {self.cfg.hostname} LMTP mail.local ready")
            self._commands()
        except IdleTimeout:
            self.logger.warning("LMTP client silent for %s s; session ended", self.cfg.delivery.lmtp_timeout)
            try:
                self.reply("421 4.4.2 timeout, closing the session")
            except (PeerGone, IdleTimeout):
                pass
        except PeerGone:
            pass
        finally:
            self.conn.close()
        return 0

    def _commands(self):
        while True:
            try:
                line = self.conn.readline(MAX_COMMAND)
            except LineTooLong:
                self.reply("500 5.5.2 line too long")
                continue
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            entry = self.commands.get(verb)
            if entry is None:
                self.reply("500 5.5.1 unknown command")
            elif self.state not in entry[1]:
                self.reply("503 5.5.1 bad sequence of commands")
            else:
                entry[0](arg.strip())

    def lhlo(self, arg):
        if not arg:
            self.reply("501 5.5.4 LHLO needs a host name")
            return
        self._reset()
        self.reply(f"250 {self.cfg.hostname}", "250 PIPELINING", "250 ENHANCEDSTATUSCODES", "250 8BITMIME",
                   f"250 SIZE {self.cfg.delivery.max_message_size}" if self.cfg.delivery.max_message_size else "250 SIZE")

    def mail(self, arg):
        m = _PATH.match(arg[5:].strip()) if arg[:5].upper() == "FROM:" else None
        if m is None or any(c in m.group(1) for c in "\r\n\0"):
            self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
            return
        self.sender = m.group(1)
        self.state = MAIL
        self.reply("250 2.1.0 sender ok")

    def rcpt(self, arg):
        m = _PATH.match(arg[3:].strip()) if arg[:3].upper() == "TO:" else None
        if m is None:
            self.reply("501 5.5.4 syntax: RCPT TO:<address>")
            return
        if len(self.recipients) >= MAX_RECIPIENTS:
            self.reply("452 4.5.3 too many recipients")
            return
        user = self.userdb.lookup(user_part(m.group(1)))
        if user is None:
            self.reply("550 5.1.1 no such user")
            return
        self.recipients.append((m.group(1), user))
        self.state = RCPT
        self.reply("250 2.1.5 recipient ok")

    def data(self, _):
        self.reply("354 end data with <CR><LF>.<CR><LF>")
        with temporary_file() as spool:
            failure = self._read_data(spool)           # PeerGone, IdleTimeout: nothing was promised
            replies = [failure.format(address) for address, _ in self.recipients] if failure \
                else self._deliver_all(spool)
        for line in replies:                            # one reply each, never one multi-line reply
            self.reply(line)
        self._reset()

    def _read_data(self, spool):
        """Copy the data, dot-unstuffed, to SPOOL up to the lone dot: None, or the
        reply (a format taking the address) every recipient gets."""
        limit = self.cfg.delivery.max_message_size
        size, failure = 0, None
        line_start = True                               # a line longer than a read comes in pieces
        while True:
            line = self.conn.readline(DATA_PIECE, in_pieces=True)
            if line_start and line in (b".\r\n", b".\n"):
                return failure
            if line_start and line.startswith(b"."):
                line = line[1:]
            line_start = line.endswith(b"\n")
            size += len(line)
            if limit and size > limit:
                failure = "552 5.3.4 <{}> message too big"
            if failure is None:
                try:
                    spool.write(line)
                except OSError as exc:
                    failure = f"451 4.3.0 <{{}}> cannot store the message: {exc.strerror}"

    def _deliver_all(self, spool):
        """The reply for each recipient, in RCPT order."""
        try:
            spool.seek(0)
            prepared = prepare(spool, self.cfg.delivery.max_message_size)
        except DeliveryError as exc:
            code = "451 4.3.0" if exc.temporary else "554 5.6.0"
            return [f"{code} <{address}> {exc}" for address, _ in self.recipients]
        except OSError as exc:
            return [f"451 4.3.0 <{address}> cannot prepare the message: {exc.strerror}"
                    for address, _ in self.recipients]
        replies = []
        try:
            for address, user in self.recipients:
                try:
                    deliver(self.cfg, user, prepared, sender=self.sender, recipient=address, logger=self.logger)
                    replies.append(f"250 2.0.0 <{address}> delivered")
                except DeliveryError as exc:
                    code = "451 4.2.0" if exc.temporary else "550 5.2.0"
                    replies.append(f"{code} <{address}> {exc}")
                except Exception as exc:            # noqa: BLE001 - the others still get their reply
                    self.logger.error("<%s>: delivery failed: %s: %s", address, type(exc).__name__, exc)
                    replies.append(f"451 4.3.0 <{address}> local error, try again later")
        finally:
            prepared.close()
        return replies

    def rset(self, _):
        self._reset()
        self.reply("250 2.0.0 ok")

    def noop(self, _):
        self.reply("250 2.0.0 ok")

    def vrfy(self, _):
        self.reply("252 2.5.2 send some mail, I'll try my best")

    def _reset(self):
        self.sender = None
        self.recipients = []
        self.state = READY
