"""webmail — the webmail served by waitress, a maintained pure-Python WSGI server.

    webmail [-C FILE]

Listens on `[webmail] listen` (127.0.0.1:8080 by default) with
`[webmail] threads` request threads, and logs like every other daemon of
the suite.  It runs as an unprivileged user: it needs only its session
database (`[webmail] session_db`) and the network; the mail is the IMAP
server's.  For the internet, put it behind an HTTPS server; its cookies
are marked Secure whenever the request reached the application as HTTPS
(wsgi.url_scheme, or HTTPS=on under CGI).
SIGTERM and SIGINT stop it.
"""

import os
import signal

from ..core import config, log
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal

COMMAND_LINE = CommandLine("webmail", [CONFIG_OPTION], ["[-C FILE]"],
                           "The mailsuite webmail: HTTP on [webmail] listen, WSGI served by waitress.")


def main(argv):
    options = COMMAND_LINE.options_only(argv[1:])
    cfg = config.load(options.get("config"))
    logger = log.setup(cfg, "webmail")
    import waitress

    from .app import Application
    application = Application(cfg, logger=logger)
    listen = " ".join(cfg.webmail.listen)
    if not listen:
        raise Fatal(os.EX_CONFIG, "[webmail] listen is empty")
    try:
        server = waitress.create_server(application, listen=listen, threads=max(1, cfg.webmail.threads),
                                        ident="mailsuite-webmail")
    except OSError as exc:
        raise Fatal(os.EX_UNAVAILABLE, f"cannot listen on {listen}: {exc.strerror}") from None
    addresses = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    logger.info("listening on %s", ", ".join(f"{host}:{port}" for host, port in addresses))

    def stop(signum, _frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
    return 0

