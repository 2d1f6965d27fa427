"""Local submission: standard input into a maildrop file, then maybe a first attempt.

Reads the message as the caller sends it (LF, CRLF or a mix; without -i a
line holding only "." ends it), takes recipients from the header for -t
(Resent- fields when present, else To/Cc/Bcc) and removes Bcc, writes the
drop file and exits 0 once it is fsynced.  Everything else (Received,
Date, Message-ID, From, X-Authentication-Warning) is the pickup's job,
because only the pickup can be trusted to do it.
"""

import os
import sys

from ..core import address as addr
from ..core import users
from ..core.cli import Fatal
from ..core.errors import os_error_status
from .dropdir import DropWriter

CHUNK = 1 << 16


def submit(cfg, opts, recipients, stdin=None):
    stdin = stdin or sys.stdin.buffer
    source = _DotReader(stdin) if opts.dots else stdin
    limit = cfg.delivery.max_message_size
    head = b""
    if opts.extract:
        from ..core.headers import read_header
        header, leftover = read_header(source)
        recipients = recipients + _header_recipients(header)
        for name in ("Bcc", "Resent-Bcc"):
            header.remove(name)
        head = header.to_bytes() + (b"" if leftover.startswith(b"\n") else b"\n") + leftover
    if not recipients:
        raise Fatal(os.EX_USAGE, "no recipients: name them on the command line or use -t"
                    if not opts.extract else "no recipient addresses found in message header")
    request = {
        "sender": opts.sender, "recipients": recipients, "full_name": opts.full_name,
        "login": _login(), "dsn": _dsn(opts, recipients),
    }
    directory = cfg.mailsuite.maildrop_dir
    try:
        drop = DropWriter(directory, request)
    except OSError as exc:
        raise Fatal(os_error_status(exc, os.EX_UNAVAILABLE), f"{directory}: {exc.strerror}") from None
    try:
        size = len(head)
        drop.write(head)
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if limit and size > limit:
                raise Fatal(os.EX_DATAERR, f"message larger than the limit of {limit} bytes")
            drop.write(chunk)
        name = drop.commit()
    except OSError as exc:
        drop.abort()
        raise Fatal(os_error_status(exc, os.EX_IOERR), f"{directory}: {exc.strerror}") from None
    except BaseException:
        drop.abort()
        raise
    _first_attempt(cfg, opts, name)
    return 0


def drop_submitter(cfg):
    """submit(sender, recipients, data_file, received, queue_id) -> id through the maildrop,
    for `sendmail -bs` run by a user who may not write the queue (the pickup keeps the id)."""
    def submit_one(sender, recipients, data, received, queue_id):
        drop = DropWriter(cfg.mailsuite.maildrop_dir,
                          {"sender": sender, "recipients": list(recipients), "login": _login()}, qid=queue_id)
        try:
            drop.write(received)
            while chunk := data.read(CHUNK):
                drop.write(chunk)
            return drop.commit()
        except BaseException:
            drop.abort()
            raise
    return submit_one


def may_write_queue(cfg):
    """Root and the sandbox's own user may put mail straight into the queue."""
    if not (os.geteuid() == 0 or cfg.mailsuite.sandbox):
        return False
    queue_dir = cfg.mailsuite.queue_dir
    return not os.path.isdir(queue_dir) or os.access(queue_dir, os.W_OK)


def quiet_logger(cfg, verbose):
    """The sendmail logger; without syslog it would write to the caller's
    stderr, which cron and PHP pass on to people: keep that for -v and for trouble."""
    import logging
    import logging.handlers

    from ..core import log
    logger = log.setup(cfg, "sendmail")
    if not verbose and not any(isinstance(h, logging.handlers.SysLogHandler) for h in logger.handlers):
        logger.setLevel(logging.WARNING)
    return logger


def _login():
    """Who we say we are; the pickup believes it only in the sandbox, where every
    user is the invoking uid and $USER is the only thing telling them apart."""
    name = os.environ.get("USER") or users.login_name()
    return name if name.isprintable() and len(name) <= 64 else None


def _header_recipients(header):
    resent = [n for n in ("Resent-To", "Resent-Cc", "Resent-Bcc") if header.has(n)]
    names = resent or ["To", "Cc", "Bcc"]
    found = []
    for name in names:
        for value in header.get_all(name):
            try:
                found.extend(addr.parse_list(value))
            except addr.AddressError as exc:
                raise Fatal(os.EX_DATAERR, f"{name}: {exc}") from None
    for rcpt in found:
        if rcpt.startswith("-"):
            raise Fatal(os.EX_DATAERR, f"{rcpt!r}: recipient starts with '-'")
    return found


def _dsn(opts, recipients):
    dsn = {}
    if opts.ret:
        dsn["ret"] = opts.ret
    if opts.envid:
        dsn["envid"] = opts.envid
    if opts.notify:
        dsn["notify"] = {"*": opts.notify}
    return dsn


def _first_attempt(cfg, opts, name):
    """Deliver our own drop file now when nobody else will soon and we may."""
    from . import runnerlock
    if opts.delivery == "q" or not cfg.submission.deliver_now:
        return
    if not may_write_queue(cfg) or not os.access(cfg.mailsuite.maildrop_dir, os.R_OK | os.W_OK):
        return
    if runnerlock.active(cfg.mailsuite.queue_dir):
        return
    if opts.delivery == "b":
        sys.stdout.flush()
        if os.fork() != 0:
            return
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            _deliver_drop(cfg, name, opts.verbose)
        finally:
            os._exit(0)
    _deliver_drop(cfg, name, opts.verbose)


def _deliver_drop(cfg, name, verbose):
    from .pickup import pickup_one
    from .queue import Queue
    from .worker import deliver_message
    logger = quiet_logger(cfg, verbose)
    queue = Queue(cfg)
    try:
        todo = [pickup_one(cfg, queue, logger, name)]
        for _generation in range(3):            # the message, its bounce, a double bounce
            todo = [new for qid in todo if qid for new in deliver_message(cfg, queue, qid, logger) or ()]
    except Exception:                           # noqa: BLE001 - the mail is safe in the queue
        logger.exception("first delivery attempt failed; the queue runner will retry")


class _DotReader:
    """Standard input up to a line holding only "." (sendmail's default end of message)."""

    def __init__(self, f):
        self.f = f
        self.done = False

    def readline(self, limit=-1):
        if self.done:
            return b""
        line = self.f.readline(limit)
        if line in (b".\n", b".\r\n", b"."):
            self.done = True
            return b""
        return line

    def read(self, size=-1):
        out = []
        total = 0
        while not self.done and (size < 0 or total < size):
            line = self.readline()
            if not line:
                self.done = True
                break
            out.append(line)
            total += len(line)
        return b"".join(out)
