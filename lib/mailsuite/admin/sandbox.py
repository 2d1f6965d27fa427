"""The self-contained sandbox: a whole installation under one directory.

`mailsuite init --dir DIR` writes DIR/mailsuite.conf pointing every path
into DIR, a passwd-file with the demo users alice and bob (password = user
name), their homes, a self-signed certificate for STARTTLS/STLS, and a
welcome message in each spool.  Every virtual user maps to the invoking
uid, so no root is needed; the same code paths run as in system mode.

A sandbox is never built twice over: its configuration may hold the
user's edits and its spools their mail.
"""

import os
import subprocess
import sys
import textwrap

from ..core import config
from ..server.passwords import hash_password

DEMO_USERS = ("alice", "bob")

# The services of a sandbox: config section, what it speaks, its default
# port, and the standard port it stands in for (`--base-port N` puts each
# service on N + its standard port: 3000 gives 3025, 3110, 3143, 3080).
SERVICES = (
    ("smtp", "SMTP", 2525, 25),
    ("pop3", "POP3", 1100, 110),
    ("imap", "IMAP", 1430, 143),
    ("webmail", "HTTP", 8080, 80),
)


class SandboxExists(Exception):
    """`init` on a directory that already holds a sandbox."""


def port_settings(ports):
    """{(section, key): value} that follow the ports: each `listen`, and the servers the webmail talks to."""
    values = {(section, "listen"): f"127.0.0.1:{port}" for section, port in ports.items()}
    if "webmail" in ports:
        values[("webmail", "imap_server")] = f"127.0.0.1:{ports['imap']}"
        values[("webmail", "smtp_server")] = f"127.0.0.1:{ports['smtp']}"
    return values


def ports_for(base_port=None):
    """{section: port} for a sandbox: the defaults, or each standard port above BASE_PORT."""
    if base_port is None:
        return {section: default for section, _, default, _ in SERVICES}
    return {section: base_port + standard for section, _, _, standard in SERVICES}


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
}

# Paths inside DIR, by (section, key).
SANDBOX_PATHS = {
    ("mailsuite", "spool_dir"): "spool",
    ("mailsuite", "queue_dir"): "queue",
    ("mailsuite", "maildrop_dir"): "maildrop",
    ("mailsuite", "state_dir"): "state",
    ("mailsuite", "passwd_file"): "passwd",
    ("queue", "aliases"): "aliases",
    ("mailsuite", "log_file"): "state/maillog",
}

CERTIFICATE = ("tls/cert.pem", "tls/key.pem")


def config_text(directory, ports, tls):
    values = {}
    for (section, key), value in SANDBOX_SETTINGS.items():
        values.setdefault(section, {})[key] = value
    for (section, key), value in port_settings(ports).items():
        values.setdefault(section, {})[key] = value
    if tls:
        cert, key = CERTIFICATE
        values["tls"] = {"cert_file": os.path.join(directory, cert), "key_file": os.path.join(directory, key)}
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


def init(directory, *, base_port=None, tls=True):
    """Build the sandbox at DIRECTORY; returns the config path.

    Raises SandboxExists when DIRECTORY already holds one.  TLS=False skips
    the certificate (the test suite builds hundreds of sandboxes).
    """
    directory = os.path.abspath(directory)
    conf = os.path.join(directory, "mailsuite.conf")
    if os.path.exists(conf):
        raise SandboxExists(f"{directory} already holds a sandbox ({conf}); "
                            f"remove the directory to start again, or choose another --dir")
    os.makedirs(directory, exist_ok=True)
    for (section, key), relative in SANDBOX_PATHS.items():
        if key.endswith("_dir"):
            os.makedirs(os.path.join(directory, relative), mode=0o700, exist_ok=True)
    tls = tls and _make_certificate(directory)
    with open(os.path.join(directory, "passwd"), "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        for name in DEMO_USERS:
            home = os.path.join(directory, "home", name)
            os.makedirs(os.path.join(home, "mail"), mode=0o700, exist_ok=True)
            f.write(f"{name}:{hash_password(name)}:::{name.capitalize()} Example:{home}\n")
    text = config_text(directory, ports_for(base_port), tls)
    with open(conf + ".tmp", "w", encoding="utf-8") as f:     # the config last: its presence means "built"
        f.write(text)
    _welcome(conf + ".tmp", conf)
    _client_settings(directory, ports_for(base_port), tls)
    os.rename(conf + ".tmp", conf)
    return conf


def _client_settings(directory, ports, tls):
    """Ready-made settings for mutt (IMAP) and fetchmail (POP3) as alice, trusting the sandbox's certificate."""
    cert = os.path.join(directory, CERTIFICATE[0])
    mutt = [f"set folder = imap://alice@localhost:{ports['imap']}/", "set spoolfile = +INBOX",
            "set imap_pass = alice", f"set header_cache = {directory}/home/alice/.mutt-cache"]
    fetchmail = f"poll localhost protocol pop3 port {ports['pop3']} user alice password alice keep mda cat"
    if tls:
        mutt += [f"set certificate_file = {cert}", "set ssl_starttls = yes", "set ssl_force_tls = yes"]
        fetchmail += f" sslproto tls1.2+ sslcertck sslcertfile {cert}"
    for name, text in (("muttrc", "\n".join(mutt)), ("fetchmailrc", fetchmail)):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)                       # fetchmail refuses a password file others can read
            f.write(text + "\n")


def set_ports(conf, ports):
    """Point each section's `listen` (and the webmail's servers) at PORTS, keeping every other line of CONF."""
    wanted = port_settings(ports)
    with open(conf, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    section, seen = None, set()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
            continue
        key = (section, stripped.split("=", 1)[0].strip())
        if key in wanted:
            lines[i] = f"{key[1]} = {wanted[key]}\n"
            seen.add(key)
    missing = {}
    for (section, key), value in wanted.items():
        if (section, key) not in seen:
            missing.setdefault(section, []).append(f"{key} = {value}\n")
    for section, added in missing.items():
        lines.append(f"\n[{section}]\n")
        lines += added
    with open(conf + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.rename(conf + ".tmp", conf)


def _make_certificate(directory):
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl command; False without it."""
    cert, key = (os.path.join(directory, relative) for relative in CERTIFICATE)
    os.makedirs(os.path.dirname(cert), mode=0o700, exist_ok=True)
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "3650", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"mailsuite: no certificate made ({exc}): STARTTLS and STLS are off in this sandbox",
              file=sys.stderr)
        return False
    return True


def _welcome(path, conf):
    """A first message for each demo user, naming the ports and CONF (read from PATH, not yet in place)."""
    from ..core.users import UserDB
    from ..lda.deliver import deliver
    from ..store.prepare import prepare_bytes
    cfg = config.load(path, required=True)
    userdb = UserDB(cfg)
    pop3, imap, web = cfg.pop3.listen[0], cfg.imap.listen[0], cfg.webmail.listen[0]
    for name in DEMO_USERS:
        user = userdb.lookup(name)
        message = textwrap.dedent(f"""\
            From: MAILER-DAEMON@localhost
            To: {name}@localhost
            Subject: Welcome to the mailsuite sandbox

            Hello {name},

            this mailbox is {user.spool}.
            Read it with `mail -C {conf} -u {name}`, over
            POP3 ({pop3}) and IMAP ({imap}), or in a browser at
            http://{web}/ (the webmail), with the password "{name}".
            """).encode()
        prepared = prepare_bytes(message)
        try:
            deliver(cfg, user, prepared, sender="")
        finally:
            prepared.close()
