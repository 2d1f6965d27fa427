"""Logging to syslog (facility mail), the place mail admins already look.

Falls back to stderr when the syslog socket is missing (containers, the
sandbox).  Delivery lines use the key=value form of Postfix's logs
(`to=<bob@x>, relay=local, delay=0.2, dsn=2.0.0, status=sent`) so the
usual grep and pflogsumm habits keep working.
"""

import logging
import os
import sys
import syslog

_FORMAT = "%(name)s[%(process)d]: %(message)s"
_program_logger = None


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
        handler.setFormatter(logging.Formatter("%(asctime)s " + _FORMAT))
    logger.addHandler(handler)
    return logger


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
        return _SyslogHandler(program, facility)
    import logging.handlers
    try:
        handler = logging.handlers.SysLogHandler(address=socket_path, facility=facility >> 3)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    return handler


def fields(**items):
    """`to=<a@b>, status=sent` in the order given; None values are left out."""
    return ", ".join(f"{key}={value}" for key, value in items.items() if value is not None)
