"""Local delivery: one message appended to one user's spool, or a clear failure.

Shared by mail.local and the MTA.  A message is first prepared once by
the store (store/prepare.py: LF line ends, the store's headers stripped,
body `From ` lines quoted), then appended to each recipient's spool under
the mailbox locks with `Return-Path:` and `Delivered-To:`.  The MTA hands
over all the messages it has for one spool at once (`deliver_all`): one
lock, one crash record and one fsync for all of them (group commit).

Security: the spool is opened with O_NOFOLLOW and must be a regular file
with one link, owned by the recipient, in mbox format; anything else (a
directory, a symlink, someone else's file, garbage) is refused and logged,
never written, and the delivery is deferred (4.2.0, EX_TEMPFAIL) so the
mail waits in the queue while an operator fixes the file (`mailsuite
check` names it), as it would for a locked mailbox.  As root a missing
spool is created 0600 USER:mail.  Every failure is a DeliveryError
carrying a sysexits status: EX_TEMPFAIL for anything that may pass
(locks, ENOSPC, EDQUOT, I/O, an unusable spool) after the spool was
truncated back, so nothing half-written survives.
"""

import grp
import os
import time

from ..core import log
from ..core.errors import is_temporary
from ..store.locking import LockTimeout
from ..store.mailbox import Mailbox, MailboxError
from ..store.prepare import DeliveryError


def _mail_gid(cfg):
    try:
        return grp.getgrnam(cfg.mailsuite.mail_group).gr_gid
    except KeyError:
        return -1


def open_spool(cfg, user):
    """The user's spool as a Mailbox, created 0600 USER:mail when missing; MailboxError if hostile."""
    mailbox = Mailbox(user.spool, cfg, owner=user, check_owner=not cfg.mailsuite.sandbox)
    if not mailbox.exists:
        mailbox.create(0o600, uid=user.uid, gid=_mail_gid(cfg))
    return mailbox


class Delivery:
    """One copy of a message for the spool: the prepared message, the envelope, the queue's bookkeeping.

    ONCE (once.AppendOnce, for the MTA's retries) is asked under the locks
    whether an attempt killed before it could record its success had
    delivered the message already, and told where it is about to go."""

    __slots__ = ("prepared", "sender", "recipient", "queue_id", "once")

    def __init__(self, prepared, *, sender, recipient=None, queue_id=None, once=None):
        self.prepared, self.sender, self.recipient = prepared, sender, recipient
        self.queue_id, self.once = queue_id, once


def deliver(cfg, user, prepared, *, sender, recipient=None, logger=None, queue_id=None, lock_timeout=None,
            once=None):
    """Append `prepared` to the user's spool; raises DeliveryError on failure.

    LOCK_TIMEOUT (default `lock_timeout`) bounds the wait for a busy mailbox."""
    [error] = deliver_all(cfg, user, [Delivery(prepared, sender=sender, recipient=recipient, queue_id=queue_id,
                                               once=once)], logger=logger, lock_timeout=lock_timeout)
    if error is not None:
        raise error


def deliver_all(cfg, user, deliveries, *, logger=None, lock_timeout=None):
    """Append every one of DELIVERIES to the user's spool at once: one lock, one crash record, one fsync.

    Returns a DeliveryError or None for each, in order.  The appends are
    all or nothing: when the append fails, every delivery not already
    found in the mailbox (ONCE) gets the same error."""
    started = time.monotonic()
    errors = [None] * len(deliveries)
    pending = list(range(len(deliveries)))
    default_domain = cfg.local_domains[0] if cfg.local_domains else cfg.hostname
    recipients = [d.recipient or f"{user.name}@{default_domain}" for d in deliveries]
    lines = [_delivery_lines(d.sender, recipient) for d, recipient in zip(deliveries, recipients)]
    try:
        with open_spool(cfg, user) as mailbox, mailbox.locked(timeout=lock_timeout):
            for i, d in enumerate(deliveries):
                if d.once is not None and d.once.found(mailbox.fd, b"".join(lines[i]) + d.prepared.header_bytes):
                    _log(logger, "info", d.queue_id, recipients[i], started, "2.0.0", "sent",
                         "found in the mailbox: delivered by an attempt that crashed before recording it")
                    pending.remove(i)
            if pending:
                def announce(offsets):
                    for i, offset in zip(pending, offsets):
                        if deliveries[i].once is not None:
                            deliveries[i].once.appending(mailbox.fd, offset)
                mailbox.append_deliveries([(deliveries[i].prepared, deliveries[i].sender or "MAILER-DAEMON",
                                            lines[i]) for i in pending], announce=announce)
    except MailboxError as exc:
        # the operator's to fix: the mail waits meanwhile
        return _failed(errors, pending, deliveries, recipients, logger, started, "warning", "4.2.0", "deferred",
                       DeliveryError(os.EX_TEMPFAIL, str(exc)))
    except LockTimeout as exc:
        return _failed(errors, pending, deliveries, recipients, logger, started, "info", "4.2.0", "deferred",
                       DeliveryError(os.EX_TEMPFAIL, str(exc)))
    except OSError as exc:
        temporary = is_temporary(exc)
        reason = f"{user.spool}: {exc.strerror or exc}"
        return _failed(errors, pending, deliveries, recipients, logger, started, "warning",
                       "4.3.0" if temporary else "5.2.0", "deferred" if temporary else "bounced",
                       DeliveryError(os.EX_TEMPFAIL if temporary else os.EX_CANTCREAT, reason))
    for i in pending:
        _log(logger, "info", deliveries[i].queue_id, recipients[i], started, "2.0.0", "sent",
             "delivered to mailbox")
    return errors


def _delivery_lines(sender, recipient):
    """The lines a delivery puts before the message's own header."""
    return [b"Return-Path: <" + (sender or "").encode("utf-8", "surrogateescape") + b">\n",
            b"Delivered-To: " + recipient.encode("utf-8", "surrogateescape") + b"\n"]


def _failed(errors, pending, deliveries, recipients, logger, started, level, dsn, status, error):
    for i in pending:
        _log(logger, level, deliveries[i].queue_id, recipients[i], started, dsn, status, str(error))
        errors[i] = error
    return errors


def _log(logger, level, queue_id, recipient, started, dsn, status, reason):
    if logger is None:
        return
    line = log.fields(to=f"<{recipient}>", relay="local", delay=f"{time.monotonic() - started:.2f}",
                      dsn=dsn, status=f"{status} ({reason})")
    getattr(logger, level)(f"{queue_id}: {line}" if queue_id else line)
