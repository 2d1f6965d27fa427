"""The self-contained sandbox: a whole installation under one directory.

`mailsuite init --dir DIR` writes DIR/mailsuite.conf pointing every path
into DIR, a passwd-file with the demo users alice and bob (password = user
name), their homes, and a welcome message in each spool.  Every virtual
user maps to the invoking uid, so no root is needed; the same code paths
run as in system mode.
"""

import os
import sys
import textwrap

from . import config
from .passwords import hash_password

DEMO_USERS = ("alice", "bob")


def _installed(program):
    """PROGRAM as installed beside the running one (the venv's bin/, PREFIX/bin), else beside Python."""
    for here in (sys.argv[0] if sys.argv else "", sys.executable):
        path = os.path.join(os.path.dirname(os.path.abspath(here)), program)
        if here and os.access(path, os.X_OK):
            return path
    return os.path.join(os.path.dirname(sys.executable), program)


# Settings each service needs in the sandbox, by (section, key): the
# unprivileged ports of DESIGN.md.  Only keys the schema knows are written.
SANDBOX_SETTINGS = {
    ("mailsuite", "hostname"): "localhost",
    ("mailsuite", "local_domains"): "localhost",
    ("mailsuite", "sandbox"): "yes",
    ("mailsuite", "log_socket"): "",
    ("mailsuite", "lock_timeout"): "30s",
    ("mail", "sendmail"): _installed("sendmail"),     # ours, never a system sendmail
    ("pop3", "listen"): "127.0.0.1:1100",
    ("imap", "listen"): "127.0.0.1:1430",
    ("smtp", "listen"): "127.0.0.1:2525",
}

# Paths inside DIR, by (section, key).
SANDBOX_PATHS = {
    ("mailsuite", "spool_dir"): "spool",
    ("mailsuite", "queue_dir"): "queue",
    ("mailsuite", "maildrop_dir"): "maildrop",
    ("mailsuite", "state_dir"): "state",
    ("mailsuite", "passwd_file"): "passwd",
    ("queue", "aliases"): "aliases",
}


def config_text(directory):
    values = {}
    for (section, key), value in SANDBOX_SETTINGS.items():
        values.setdefault(section, {})[key] = value
    for (section, key), relative in SANDBOX_PATHS.items():
        values.setdefault(section, {})[key] = os.path.join(directory, relative)
    lines = ["# mailsuite sandbox configuration, written by 'mailsuite init'.",
             "# Every other key has its default: see mailsuite.conf(5).", ""]
    for section, keys in values.items():
        known = config.SCHEMA.get(section, {})
        present = {k: v for k, v in keys.items() if k in known}
        if not present:
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}".rstrip() for k, v in present.items()]
        lines.append("")
    return "\n".join(lines)


def init(directory):
    """Build the sandbox at `directory` (absolute); returns the config path."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    for (section, key), relative in SANDBOX_PATHS.items():
        if key.endswith("_dir"):
            os.makedirs(os.path.join(directory, relative), mode=0o700, exist_ok=True)
    conf = os.path.join(directory, "mailsuite.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(config_text(directory))
    with open(os.path.join(directory, "passwd"), "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        for name in DEMO_USERS:
            home = os.path.join(directory, "home", name)
            os.makedirs(os.path.join(home, "mail"), mode=0o700, exist_ok=True)
            f.write(f"{name}:{hash_password(name)}:::{name.capitalize()} Example:{home}\n")
    _welcome(conf)
    return conf


def _welcome(conf):
    from .deliver import deliver, prepare_bytes
    from .users import UserDB
    cfg = config.load(conf, required=True)
    userdb = UserDB(cfg)
    for name in DEMO_USERS:
        user = userdb.lookup(name)
        message = textwrap.dedent(f"""\
            From: MAILER-DAEMON@localhost
            To: {name}@localhost
            Subject: Welcome to the mailsuite sandbox

            Hello {name},

            this mailbox is {user.spool}.
            Read it with `mail -C {conf} -u {name}`, or over POP3 (port 1100)
            and IMAP (port 1430) with the password "{name}".
            """).encode()
        prepared = prepare_bytes(message)
        try:
            deliver(cfg, user, prepared, sender="")
        finally:
            prepared.close()
