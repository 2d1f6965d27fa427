"""LMTP (RFC 2033) for mail.local -l: one status per recipient after DATA.

A small command table: each verb with the states it is valid in.  The
message is read dot-unstuffed into a temporary file, prepared once, and
appended to each accepted recipient's spool; the replies after DATA come in
RCPT order, as the RFC requires.
"""

import re

from .deliver import DeliveryError, deliver, prepare, temporary_file
from .mail_local import _local_part

MAX_COMMAND = 2048
MAX_RECIPIENTS = 1000
_PATH = re.compile(r"<([^<>\s]*)>(?:\s+(.*))?$")

# states
GREETED, READY, MAIL, RCPT = "greeted", "ready", "mail", "rcpt"


class LMTPSession:
    def __init__(self, cfg, userdb, logger, rfile, wfile):
        self.cfg, self.userdb, self.logger = cfg, userdb, logger
        self.rfile, self.wfile = rfile, wfile
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
            self.wfile.write(f"{line[:3]}{sep}{line[4:]}\r\n".encode())
        self.wfile.flush()

    def run(self):
        self.reply(f"220 {self.cfg.hostname} LMTP mail.local ready")
        while True:
            line = self.rfile.readline(MAX_COMMAND + 1)
            if not line:
                return 0
            if len(line) > MAX_COMMAND and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = self.rfile.readline(MAX_COMMAND)
                self.reply("500 5.5.2 line too long")
                continue
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return 0
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
        user = self.userdb.lookup(_local_part(m.group(1)))
        if user is None:
            self.reply("550 5.1.1 no such user")
            return
        self.recipients.append((m.group(1), user))
        self.state = RCPT
        self.reply("250 2.1.5 recipient ok")

    def data(self, _):
        self.reply("354 end data with <CR><LF>.<CR><LF>")
        limit = self.cfg.delivery.max_message_size
        with temporary_file() as spool:
            size = 0
            line_start = True                           # a line longer than a read comes in pieces
            while True:
                line = self.rfile.readline(1 << 20)
                if not line:
                    return                              # peer went away: nothing was promised
                if line_start and line in (b".\r\n", b".\n"):
                    break
                if line_start and line.startswith(b"."):
                    line = line[1:]
                line_start = line.endswith(b"\n")
                size += len(line)
                if not limit or size <= limit:
                    spool.write(line)
            if limit and size > limit:
                self.reply(*[f"552 5.3.4 message too big for {address}" for address, _ in self.recipients])
            else:
                spool.seek(0)
                self._deliver_all(spool)
        self._reset()

    def _deliver_all(self, spool):
        try:
            prepared = prepare(spool, self.cfg.delivery.max_message_size)
        except DeliveryError as exc:
            self.reply(*[f"554 5.6.0 {exc}" for _ in self.recipients])
            return
        replies = []
        try:
            for address, user in self.recipients:
                try:
                    deliver(self.cfg, user, prepared, sender=self.sender, recipient=address, logger=self.logger)
                    replies.append(f"250 2.0.0 <{address}> delivered")
                except DeliveryError as exc:
                    code = "451 4.2.0" if exc.temporary else "550 5.2.0"
                    replies.append(f"{code} <{address}> {exc}")
        finally:
            prepared.close()
        for line in replies:
            self.reply(line)

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
