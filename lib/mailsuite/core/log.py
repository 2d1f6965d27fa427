"""Logging to syslog (facility mail), the place mail admins already look.

Falls back to stderr when the syslog socket is missing (containers, the
sandbox); a program serving a client on stdin/stdout (inetd) has had its
stderr pointed at /dev/null by `cli.run` first, so a log line never
reaches the client.  Delivery lines use the key=value form of Postfix's logs
(`to=<bob@x>, relay=local, delay=0.2, dsn=2.0.0, status=sent`) so the
usual grep and pflogsumm habits keep working.

Log lines carry what clients, senders and users wrote (addresses, AUTH
names, remote replies, command output).  Every line passes through
`quote()` on its way out, so a control character can neither start a
forged line nor drive the terminal of whoever reads the log; bounces use
`quote()` and `excerpt()` the same way.
"""

import logging
import os
import sys
import syslog

_FORMAT = "%(name)s[%(process)d]: %(message)s"
_program_logger = None


def quote(text):
    """TEXT with every control or non-printable character as a \\xNN (\\uNNNN)
    escape: one inert line.  Quoting twice changes nothing."""
    if text.isprintable():
        return text
    return "".join(_escape(c) for c in text)


def _escape(c):
    if c.isprintable():
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def excerpt(text, limit=80):
    """At most LIMIT characters of TEXT's first non-blank line, quoted: what a
    bounce or log line may show of a file or a program's output."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    shown = quote(first)
    if len(shown) <= limit:
        return shown
    parts, size = [], 0
    for c in first:
        part = _escape(c)
        if size + len(part) > limit - 3:
            break
        parts.append(part)
        size += len(part)
    return "".join(parts) + "..."


class _QuotingFormatter(logging.Formatter):
    """Quotes the message of every record, and each line of a traceback."""

    def format(self, record):
        saved = record.msg, record.args
        record.msg, record.args = quote(record.getMessage()), None
        try:
            return super().format(record)
        finally:
            record.msg, record.args = saved

    def formatException(self, exc_info):
        return "\n".join(quote(line) for line in super().formatException(exc_info).split("\n"))


def setup(cfg, program):
    """The program's logger, configured once per process."""
    global _program_logger
    logger = _program_logger = logging.getLogger(program)
    if logger.handlers:
        return logger
    logger.propagate = False
    logger.setLevel(getattr(logging, cfg.mailsuite.log_level.upper(), logging.INFO))
    handler = _syslog_handler(cfg, program)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_QuotingFormatter("%(asctime)s " + _FORMAT))
    logger.addHandler(handler)
    if cfg.mailsuite.log_file:
        logger.addHandler(_file_handler(cfg.mailsuite.log_file))
    return logger


def _file_handler(path):
    """Lines appended to PATH by every program (O_APPEND keeps concurrent writers' lines whole)."""
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return logging.NullHandler()
    handler.setFormatter(_QuotingFormatter("%(asctime)s " + _FORMAT))
    return handler


def current():
    """The running program's logger, for library code (the store) that has none passed to it."""
    return _program_logger or logging.getLogger("mailsuite")


class _SyslogHandler(logging.Handler):
    """Through the C library's syslog(3), which is what /dev/log means on this host.

    logging.handlers.SysLogHandler would do the same, at the price of
    importing socket and pickle in every delivery agent; it is used only
    when the configuration names another socket.
    """

    _PRIORITY = {logging.DEBUG: syslog.LOG_DEBUG, logging.INFO: syslog.LOG_INFO,
                 logging.WARNING: syslog.LOG_WARNING, logging.ERROR: syslog.LOG_ERR,
                 logging.CRITICAL: syslog.LOG_CRIT}

    def __init__(self, ident, facility):
        super().__init__()
        syslog.openlog(ident, syslog.LOG_PID, facility)

    def emit(self, record):
        try:
            syslog.syslog(self._PRIORITY.get(record.levelno, syslog.LOG_INFO), self.format(record))
        except Exception:
            self.handleError(record)


def _syslog_handler(cfg, program):
    socket_path = cfg.mailsuite.log_socket
    if not socket_path or not os.path.exists(socket_path):
        return None
    facility = getattr(syslog, "LOG_" + cfg.mailsuite.log_facility.upper(), syslog.LOG_MAIL)
    if socket_path == "/dev/log":
        handler = _SyslogHandler(program, facility)
        handler.setFormatter(_QuotingFormatter())
        return handler
    import logging.handlers
    try:
        handler = logging.handlers.SysLogHandler(address=socket_path, facility=facility >> 3)
    except OSError:
        return None
    handler.setFormatter(_QuotingFormatter(_FORMAT))
    return handler


def fields(**items):
    """`to=<a@b>, status=sent` in the order given; None values are left out."""
    return ", ".join(f"{key}={value}" for key, value in items.items() if value is not None)
