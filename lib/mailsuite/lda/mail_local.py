"""mail.local — the local delivery agent.

    mail.local [-C FILE] [-f SENDER | -r SENDER] [-d] USER...
    mail.local [-C FILE] -l

Reads one message on standard input and appends it to each USER's spool
(see deliver.py for the checks and the format).  With -l it speaks LMTP
(RFC 2033) on standard input and output instead, answering for each
recipient separately, which is how the MTA hands over mail for several
users without the all-or-nothing of an exit status.

Exit status (sysexits): 0 when every user got the message; EX_TEMPFAIL when
any delivery failed for a reason that may pass (the caller should retry:
the users that did get it are named on stderr); otherwise the first
permanent failure (EX_NOUSER, EX_DATAERR, EX_CANTCREAT, EX_USAGE).
"""

import os
import sys

from ..core import config, log
from ..core.address import user_part
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal, Option
from ..core.users import UserDB
from ..store.prepare import DeliveryError, prepare
from .deliver import deliver

COMMAND_LINE = CommandLine("mail.local", [
    CONFIG_OPTION,
    Option(("-f",), "sender", "envelope sender, written to the From_ line and Return-Path:", metavar="SENDER"),
    Option(("-r",), "sender", "the same as -f (BSD mail.local)", metavar="SENDER"),
    Option(("-l",), "lmtp", "speak LMTP (RFC 2033) on standard input/output"),
    Option(("-d",), "deliver", "accepted for compatibility: delivery is the only mode"),
], ["[-C FILE] [-f SENDER | -r SENDER] [-d] USER...", "[-C FILE] -l"],
    "Deliver the message on standard input to each USER's mailbox.")


def main(argv):
    options, users = COMMAND_LINE.parse(argv[1:])
    if options.get("help"):
        print(COMMAND_LINE.help(), end="")
        return 0
    sender = options.get("sender", "")
    if any(c in sender for c in "\r\n\0"):
        raise Fatal(os.EX_USAGE, "sender holds a control character")
    cfg = config.load(options.get("config"))
    logger = log.setup(cfg, "mail.local")
    userdb = UserDB(cfg)
    if options.get("lmtp"):
        from ..server.connection import Connection
        from .lmtp import LMTPSession
        conn = Connection.from_stdio(timeout=cfg.delivery.lmtp_timeout)
        return LMTPSession(cfg, userdb, logger, conn).run()
    if not users:
        raise COMMAND_LINE.error("no USER to deliver to")
    return deliver_to_users(cfg, userdb, logger, sys.stdin.buffer, sender, users)


def deliver_to_users(cfg, userdb, logger, stream, sender, names):
    """Deliver one message from `stream` to every named user; returns the exit status."""
    try:
        prepared = prepare(stream, cfg.delivery.max_message_size)
    except DeliveryError as exc:
        raise Fatal(exc.status, str(exc)) from None
    except OSError as exc:
        raise Fatal(os.EX_TEMPFAIL, f"reading the message: {exc.strerror}") from None
    failures = []
    delivered = []
    try:
        for name in names:
            user = userdb.lookup(user_part(name))
            if user is None:
                logger.info(log.fields(to=f"<{name}>", relay="local", dsn="5.1.1", status="bounced (unknown user)"))
                failures.append((os.EX_NOUSER, f"{name}: unknown user"))
                continue
            try:
                deliver(cfg, user, prepared, sender=sender, logger=logger)
                delivered.append(name)
            except DeliveryError as exc:
                failures.append((exc.status, f"{name}: {exc}"))
    finally:
        prepared.close()
    for _, message in failures:
        print(f"mail.local: {message}", file=sys.stderr)
    if not failures:
        return 0
    if delivered:
        print(f"mail.local: delivered to {', '.join(delivered)}", file=sys.stderr)
    if any(status == os.EX_TEMPFAIL for status, _ in failures):
        return os.EX_TEMPFAIL
    return failures[0][0]
