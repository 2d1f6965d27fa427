"""Logging to syslog (facility mail), the place mail admins already look.

Falls back to stderr when the syslog socket is missing (containers, the
sandbox).  Delivery lines use the key=value form of Postfix's logs
(`to=<bob@x>, relay=local, delay=0.2, dsn=2.0.0, status=sent`) so the
usual grep and pflogsumm habits keep working.
"""

import logging
import logging.handlers
import os
import sys

_FORMAT = "%(name)s[%(process)d]: %(message)s"


def setup(cfg, program):
    """The program's logger, configured once per process."""
    logger = logging.getLogger(program)
    if logger.handlers:
        return logger
    logger.propagate = False
    logger.setLevel(getattr(logging, cfg.mailsuite.log_level.upper(), logging.INFO))
    handler = _syslog_handler(cfg) or logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT if isinstance(handler, logging.handlers.SysLogHandler)
                                           else "%(asctime)s " + _FORMAT))
    logger.addHandler(handler)
    return logger


def _syslog_handler(cfg):
    socket_path = cfg.mailsuite.log_socket
    if not socket_path or not os.path.exists(socket_path):
        return None
    facility = logging.handlers.SysLogHandler.facility_names.get(cfg.mailsuite.log_facility, 
                                                                 logging.handlers.SysLogHandler.LOG_MAIL)
    try:
        return logging.handlers.SysLogHandler(address=socket_path, facility=facility)
    except OSError:
        return None


def fields(**items):
    """`to=<a@b>, status=sent` in the order given; None values are left out."""
    return ", ".join(f"{key}={value}" for key, value in items.items() if value is not None)
