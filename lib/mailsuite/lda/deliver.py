"""Local delivery: one message appended to one user's spool, or a clear failure.

Shared by mail.local and the MTA.  A message is first prepared once by
the store (store/prepare.py: LF line ends, the store's headers stripped,
body `From ` lines quoted), then appended to each recipient's spool under
the mailbox locks with `Return-Path:` and `Delivered-To:`.

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


def deliver(cfg, user, prepared, *, sender, recipient=None, logger=None, queue_id=None, lock_timeout=None,
            once=None):
    """Append `prepared` to the user's spool; raises DeliveryError on failure.

    LOCK_TIMEOUT (default `lock_timeout`) bounds the wait for a busy mailbox.
    ONCE (once.AppendOnce, for the MTA's retries) is asked under the locks
    whether an attempt killed before it could record its success had
    delivered the message already, and told where it is about to go."""
    started = time.monotonic()
    recipient = recipient or f"{user.name}@{cfg.local_domains[0] if cfg.local_domains else cfg.hostname}"
    envelope = sender or "MAILER-DAEMON"
    extra = [b"Return-Path: <" + (sender or "").encode("utf-8", "surrogateescape") + b">\n",
             b"Delivered-To: " + recipient.encode("utf-8", "surrogateescape") + b"\n"]
    try:
        with open_spool(cfg, user) as mailbox, mailbox.locked(timeout=lock_timeout):
            if once is not None and once.found(mailbox.fd, b"".join(extra) + prepared.header_bytes):
                _log(logger, "info", queue_id, recipient, started, "2.0.0", "sent",
                     "found in the mailbox: delivered by an attempt that crashed before recording it")
                return
            if once is not None:
                once.appending(mailbox.fd)
            mailbox.append(prepared, sender=envelope, extra_headers=extra)
    except MailboxError as exc:                      # the operator's to fix: the mail waits meanwhile
        _log(logger, "warning", queue_id, recipient, started, "4.2.0", "deferred", str(exc))
        raise DeliveryError(os.EX_TEMPFAIL, str(exc)) from None
    except LockTimeout as exc:
        _log(logger, "info", queue_id, recipient, started, "4.2.0", "deferred", str(exc))
        raise DeliveryError(os.EX_TEMPFAIL, str(exc)) from None
    except OSError as exc:
        temporary = is_temporary(exc)
        reason = f"{user.spool}: {exc.strerror or exc}"
        _log(logger, "warning", queue_id, recipient, started, "4.3.0" if temporary else "5.2.0",
             "deferred" if temporary else "bounced", reason)
        raise DeliveryError(os.EX_TEMPFAIL if temporary else os.EX_CANTCREAT, reason) from None
    _log(logger, "info", queue_id, recipient, started, "2.0.0", "sent", "delivered to mailbox")


def _log(logger, level, queue_id, recipient, started, dsn, status, reason):
    if logger is None:
        return
    line = log.fields(to=f"<{recipient}>", relay="local", delay=f"{time.monotonic() - started:.2f}",
                      dsn=dsn, status=f"{status} ({reason})")
    getattr(logger, level)(f"{queue_id}: {line}" if queue_id else line)
