"""webmail.cgi — the webmail as a classic CGI program, for any HTTP server with CGI.

The HTTP server runs it once per request (lighttpd's mod_cgi, Apache's
mod_cgi, thttpd...), with the request in the environment and on stdin
(RFC 3875); wsgiref's CGIHandler turns that into one call of the same
WSGI application the `webmail` server runs.  The configuration is
MAILSUITE_CONFIG (set it in the server's CGI environment) or
/etc/mailsuite/mailsuite.conf.  No IMAP connection outlives a request, so
every page logs in again: slower than the `webmail` server, and no
process stays behind.
"""

import sys


def main(argv):
    from wsgiref.handlers import CGIHandler

    from ..core import config
    try:
        cfg = config.load(None)
        from .app import Application
        application = Application(cfg, pooled=False)
    except Exception as exc:                   # the browser gets a 500, the server's error log the reason
        sys.stderr.write(f"webmail.cgi: {exc}\n")
        sys.stdout.write("Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                         "The webmail is not configured; see the server's error log.\r\n")
        return 0
    CGIHandler().run(application)
    return 0
