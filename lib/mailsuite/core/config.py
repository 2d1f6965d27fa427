"""The configuration: one INI file, every key declared here with its default.

Programs call `load()` once and pass the resulting `Config` down; nothing
reads the file a second time and there are no module-level settings.  The
schema below is the single source of truth for keys, types and defaults:
`etc/mailsuite.conf` documents the same keys, and a test keeps the two in
step.  An unknown key or a value of the wrong type is an error naming the
file, the line and the key, because a silently ignored typo in a mail
server's configuration is how open relays happen.
"""

import configparser
import os
import re
from types import SimpleNamespace

from .errors import ExitError

DEFAULT_PATH = "/etc/mailsuite/mailsuite.conf"
ENV_VAR = "MAILSUITE_CONFIG"


class ConfigError(ExitError):
    """A configuration problem; the message is one line naming file and key."""

    status = os.EX_CONFIG


# --- value types ---------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TIME_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = r"(\d+(?:\.\d+)?)\s*(ms|[smhdw]?)"


def parse_size(text):
    """'10M' -> 10485760; plain numbers are bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[bB]?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_duration(text):
    """'5d' -> 432000 seconds; '1h30m', '0.5s' and '250ms' work too; plain numbers are seconds.

    Matched in lower case rather than with re.I: every program parses the
    defaults at start-up, and compiling a case-blind pattern costs 0.4 ms."""
    lowered = text.lower()
    if not re.fullmatch(rf"\s*(?:{_DURATION_PART}\s*)+", lowered):
        raise ValueError(f"not a duration: {text!r}")
    total = sum(float(n) * _TIME_UNITS[u] for n, u in re.findall(_DURATION_PART, lowered))
    return int(total) if total.is_integer() else total


def parse_bool(text):
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def parse_list(text):
    """Items separated by commas and/or white space."""
    return tuple(item for item in re.split(r"[,\s]+", text.strip()) if item)


PARSERS = {
    "str": str.strip,
    "int": lambda t: int(t.strip()),
    "bool": parse_bool,
    "size": parse_size,
    "duration": parse_duration,
    "list": parse_list,
}


class Key:
    """One configuration key: its type name, default (as written in the file) and documentation."""

    __slots__ = ("type", "default", "doc")

    def __init__(self, type, default, doc):
        self.type, self.default, self.doc = type, default, doc


# --- the schema ----------------------------------------------------------
# Defaults are strings in the file's own syntax, so the example file and the
# schema can be compared line by line.

SCHEMA = {
    "mailsuite": {
        "hostname": Key("str", "", "this host's name in greetings, Received: and Message-ID:; empty = the FQDN"),
        "local_domains": Key("list", "localhost", "domains delivered here, besides the hostname"),
        "spool_dir": Key("str", "/var/spool/mail", "the mbox spools, one file per user"),
        "queue_dir": Key("str", "/var/spool/mailsuite/queue", "the MTA's durable queue (0700 root)"),
        "maildrop_dir": Key("str", "/var/spool/mailsuite/maildrop", "local submissions (1733 root); the file owner is the sender"),
        "state_dir": Key("str", "/var/lib/mailsuite", "daemon state: pid files, compiled aliases"),
        "index_dir": Key("str", "~/.cache/mailsuite", "per-user mailbox index cache, which also remembers each mailbox's UIDVALIDITY and last UID and keeps the UIDVALIDITY counter; ~ is the mailbox owner's home; empty disables it"),
        "passwd_file": Key("str", "", "virtual users (name:hash:uid:gid:gecos:home); empty = system users only"),
        "sandbox": Key("bool", "no", "every virtual user maps to the invoking uid; nothing runs as root"),
        "mail_group": Key("str", "mail", "group that owns the spool directory and may create dotlocks"),
        "lock_timeout": Key("duration", "60s", "how long to wait for a mailbox lock before a temporary failure"),
        "dotlock_helper": Key("str", "/usr/bin/dotlockfile", "setgid helper used when the spool directory refuses our dotlock"),
        "log_facility": Key("str", "mail", "syslog facility"),
        "log_socket": Key("str", "/dev/log", "syslog socket; empty or missing = log to stderr"),
        "log_level": Key("str", "info", "debug, info, warning or error"),
        "log_file": Key("str", "", "also append every log line to this file (the sandbox's state/maillog); empty = none"),
    },
    "delivery": {
        "max_message_size": Key("size", "50M", "mail.local refuses larger messages (0 = no limit)"),
        "header_padding": Key("int", "64", "spare bytes reserved in each message's X-Keywords: header, so flag changes are one write"),
        "lmtp_timeout": Key("duration", "5m", "mail.local -l: each LMTP command or data line must arrive whole within this, else 421 and the session ends"),
    },
    "mail": {
        "sendmail": Key("str", "/usr/sbin/sendmail", "program mail(1) hands messages to (run as: sendmail -oi [-f FROM] -- ADDRESS...)"),
        "rc_file": Key("str", "/etc/mail.rc", "system-wide start-up file mail(1) reads before ~/.mailrc"),
        "from_domain": Key("str", "", "domain of the From: address mail(1) writes (user@domain); empty = the hostname"),
    },
    "smtp": {
        "listen": Key("list", "0.0.0.0:25", "sendmail -bd: addresses to listen on for SMTP, HOST:PORT ([::]:25 for IPv6)"),
        "listen_submission": Key("list", "", "sendmail -bd: addresses for message submission (RFC 6409), e.g. 0.0.0.0:587: AUTH required to send"),
        "max_children": Key("int", "50", "concurrent SMTP sessions; beyond it new connections get 421 4.7.0"),
        "max_use": Key("int", "100", "sendmail -bd: connections one SMTP session process serves, one after another, before it exits (Postfix's max_use); 1 = a new process for every connection"),
        "max_recipients": Key("int", "100", "recipients per message; more get 452 4.5.3"),
        "max_message_size": Key("size", "50M", "largest message accepted (SIZE); larger ones get 552 5.3.4"),
        "max_line_length": Key("int", "1000", "longest command or text line, CRLF included (RFC 5321 says 1000)"),
        "max_errors": Key("int", "10", "bad commands in one session before it is closed with 421"),
        "max_junk_commands": Key("int", "100", "NOOP, RSET, VRFY and HELP allowed per session (they keep a session alive for free)"),
        "relay_networks": Key("list", "127.0.0.0/8 ::1/128", "clients in these networks may relay to any domain"),
        "reject_unknown_recipients": Key("bool", "yes", "answer RCPT for a local address that is no user, alias or catch_all with 550 5.1.1 (no bounce to forged senders); no = accept and bounce later"),
        "smtputf8": Key("bool", "yes", "offer SMTPUTF8 (UTF-8 addresses and headers, RFC 6531)"),
        "greeting_delay": Key("duration", "0", "wait this long before the greeting; clients that talk first are dropped"),
        "command_timeout": Key("duration", "5m", "each command or data line must arrive whole within this (a deadline per line, not per byte)"),
        "data_timeout": Key("duration", "10m", "time allowed for a whole DATA transfer, checked inside every line"),
        "login_timeout": Key("duration", "2m", "time from connect to the first MAIL command (EHLO, STARTTLS, AUTH included); then 421"),
        "max_login_commands": Key("int", "20", "command lines allowed before the first MAIL command (0 = no limit)"),
        "max_sessions_per_address": Key("int", "10", "sendmail -bd: concurrent sessions from one client address (0 = no limit); beyond it 421 4.7.0"),
        "tls_cert_file": Key("str", "", "certificate for STARTTLS, overriding [tls] cert_file; no certificate = no STARTTLS"),
        "tls_key_file": Key("str", "", "private key for tls_cert_file"),
        "reject_bare_newlines": Key("bool", "yes", "reject messages with a bare CR or LF (SMTP smuggling); no = treat them as line ends"),
        "relayhost": Key("str", "", "send all remote mail through this smarthost (host, host:port or [host]:port)"),
        "remote_port": Key("int", "25", "port used when connecting to MX hosts"),
        "connect_timeout": Key("duration", "30s", "time allowed to connect to a remote host"),
        "client_tls": Key("bool", "yes", "use STARTTLS opportunistically when the remote host offers it"),
        "max_hops": Key("int", "50", "a message with more Received: headers is bounced as a mail loop"),
        "dns_server": Key("str", "", "ask this DNS server for MX records instead of the system resolver"),
        "dns_port": Key("int", "53", "port of dns_server"),
        "dns_timeout": Key("duration", "30s", "time allowed for one DNS lookup"),
        "static_routes": Key("list", "", "domain=host:port items that bypass MX lookup for those domains"),
    },
    "queue": {
        "min_free_space": Key("size", "10M", "refuse new mail (452 4.3.1, EX_TEMPFAIL) when the queue's file system has less free"),
        "max_workers": Key("int", "4", "delivery workers the queue runner forks at most at once"),
        "mailbox_lock_wait": Key("duration", "5s", "a delivery worker waits this long for a locked mailbox, then defers that recipient and goes on"),
        "run_interval": Key("duration", "5m", "how often the daemon's runner scans the deferred queue (-qINTERVAL overrides)"),
        "min_backoff": Key("duration", "5m", "first retry delay after a temporary failure; doubles each attempt"),
        "max_backoff": Key("duration", "1h", "longest delay between two attempts"),
        "max_lifetime": Key("duration", "5d", "a message still undeliverable after this long bounces"),
        "hold_after_crashes": Key("int", "3", "a message whose delivery worker crashed this many times is held (mailq shows why) until released"),
        "aliases": Key("str", "/etc/aliases", "the aliases(5) file; newaliases compiles it to FILE.db beside it"),
        "forward_file": Key("str", "~/.forward", "per-user forwarding file; ~ is the user's home; empty disables it"),
        "allow_commands": Key("bool", "yes", "allow |command deliveries from aliases and .forward files"),
        "allow_files": Key("bool", "yes", "allow /file deliveries from aliases and .forward files"),
        "catch_all": Key("str", "", "local address that gets the mail of unknown local users (Postfix's luser_relay); empty = they are unknown"),
        "default_privs": Key("str", "nobody", "user that runs commands and writes files named in root-owned alias files"),
        "command_timeout": Key("duration", "1h", "a delivery command running longer is killed and the delivery deferred"),
        "postmaster": Key("str", "postmaster", "gets bounces that cannot be returned (double bounces)"),
    },
    "submission": {
        "trusted_users": Key("list", "root, daemon, mail", "users whose sendmail -f sets the sender without an X-Authentication-Warning"),
        "origin": Key("str", "", "domain appended to unqualified addresses; empty = the hostname"),
        "deliver_now": Key("bool", "yes", "sendmail picks up and delivers its own message at once when it may write the queue (root, the sandbox)"),
    },
    "imap": {
        "listen": Key("list", "0.0.0.0:143", "imapd -d: addresses to listen on, HOST:PORT ([::1]:143 for IPv6)"),
        "listen_tls": Key("list", "", "imapd -d: addresses for implicit TLS (IMAPS), e.g. 0.0.0.0:993"),
        "max_sessions": Key("int", "100", "imapd -d: most concurrent sessions; beyond it clients are told to come back later"),
        "mail_dir": Key("str", "~/mail", "folders other than INBOX: mbox files under this directory; ~ is the user's home"),
        "special_use": Key("list", "", "SPECIAL-USE folders (RFC 6154) as NAME=\\Flag, e.g. Sent=\\Sent Trash=\\Trash"),
        "idle_timeout": Key("duration", "30m", "log out a client whose next command line has not arrived whole after this long (RFC 3501: at least 30 minutes)"),
        "login_timeout": Key("duration", "1m", "a client not logged in this long after connecting is disconnected"),
        "max_login_commands": Key("int", "20", "command lines allowed before login (0 = no limit)"),
        "max_sessions_per_address": Key("int", "20", "imapd -d: concurrent sessions from one client address (0 = no limit)"),
        "idle_poll": Key("duration", "30s", "during IDLE, look at the mailbox this often even without an inotify event"),
        "max_line_length": Key("size", "64k", "longest command line, literals excluded"),
        "max_command_size": Key("size", "1M", "longest command with its literals, APPEND excepted"),
        "max_message_size": Key("size", "50M", "largest message APPEND accepts"),
        "max_bad_commands": Key("int", "20", "close a session after this many syntax errors in a row"),
    },
    "pop3": {
        "listen": Key("list", "0.0.0.0:110", "addresses pop3d -d listens on, HOST:PORT ([::1]:110 for IPv6)"),
        "listen_tls": Key("list", "", "addresses pop3d -d listens on with implicit TLS (POP3S), e.g. 0.0.0.0:995"),
        "max_sessions": Key("int", "100", "most concurrent pop3d -d sessions; beyond it clients are told to come back later"),
        "idle_timeout": Key("duration", "10m", "close a session whose next command line has not arrived whole after this long (RFC 1939: at least 10 minutes)"),
        "login_timeout": Key("duration", "1m", "a client not logged in this long after connecting is disconnected"),
        "max_login_commands": Key("int", "20", "command lines allowed before login (0 = no limit)"),
        "max_sessions_per_address": Key("int", "10", "pop3d -d: concurrent sessions from one client address (0 = no limit)"),
    },
    "auth": {
        "pam": Key("bool", "yes", "check system users' passwords through PAM (passwd-file users always use their hash)"),
        "pam_service": Key("str", "mailsuite", "PAM service name (/etc/pam.d/NAME)"),
        "allow_plaintext": Key("bool", "no", "accept passwords without TLS from any address (not only loopback)"),
        "failure_delay": Key("duration", "2s", "every failed login ends this long after it began (n times this for the n-th failure of a session), whatever the cause"),
        "max_login_failures": Key("int", "3", "failed logins in one POP3, IMAP or SMTP session before it is closed"),
        "first_valid_uid": Key("int", "1000", "accounts below this uid (system accounts, root) never log in"),
        "apop_secrets": Key("str", "", "APOP shared secrets, name:secret lines, mode 0600; empty disables APOP"),
        "scrypt_cost": Key("int", "14", "cost of the scrypt password hashes mailsuite makes (log2 of N, with r=8, p=1: 14 uses 16 MiB and about 25 ms of a core per check, each step doubles both); a login costs one check at the cost its stored hash was made with, and mailsuite check names passwd-file hashes made cheaper than this"),
    },
    "webmail": {
        "listen": Key("list", "127.0.0.1:8080", "webmail (the waitress server): addresses to listen on, HOST:PORT; put a TLS proxy in front for the internet"),
        "imap_server": Key("str", "127.0.0.1:143", "IMAP server the webmail logs in to as the user, HOST:PORT (any IMAP4rev1 server)"),
        "imap_security": Key("str", "none", "none, starttls or tls (implicit) towards imap_server; none only on loopback"),
        "smtp_server": Key("str", "127.0.0.1:587", "submission server the webmail sends through with AUTH as the user, HOST:PORT"),
        "smtp_security": Key("str", "none", "none, starttls or tls (implicit) towards smtp_server; none only on loopback"),
        "ca_file": Key("str", "", "CA certificates to verify the IMAP and SMTP servers with; empty = the system's"),
        "session_db": Key("str", "", "SQLite file of sessions and login failures; empty = state_dir/webmail.sqlite"),
        "session_idle": Key("duration", "30m", "a session unused this long ends"),
        "session_lifetime": Key("duration", "12h", "every session ends this long after its login"),
        "failure_delay": Key("duration", "2s", "pause after a failed login"),
        "max_login_failures": Key("int", "5", "failed logins per user name, and per client address, before logins are refused for failure_window"),
        "failure_window": Key("duration", "15m", "how long failed logins are counted and a lock-out lasts"),
        "page_size": Key("int", "50", "messages on one mailbox page"),
        "max_upload": Key("size", "25M", "largest compose form (attachments included) the webmail accepts"),
        "sent_folder": Key("str", "Sent", "folder a copy of each sent message is saved to (created when missing)"),
        "trash_folder": Key("str", "Trash", "folder Delete moves messages to (created when missing); deleting in it expunges"),
        "from_domain": Key("str", "", "domain of the From: address of a user whose login has no @; empty = the hostname"),
        "threads": Key("int", "8", "webmail: requests served at once"),
    },
    "tls": {
        "cert_file": Key("str", "", "PEM certificate chain for STARTTLS/STLS and implicit TLS; empty disables TLS"),
        "key_file": Key("str", "", "PEM private key; empty = in cert_file"),
        "min_version": Key("str", "TLSv1.2", "oldest TLS version accepted (TLSv1.2 or TLSv1.3)"),
        "ciphers": Key("str", "", "OpenSSL cipher list for TLS 1.2; empty = Python's secure default"),
    },
}


class Config:
    """Typed, read-only view of the file: `cfg.mailsuite.spool_dir`."""

    def __init__(self, values, path):
        self.path = path
        for section, keys in values.items():
            setattr(self, section, SimpleNamespace(**keys))

    @property
    def hostname(self):
        if self.mailsuite.hostname:
            return self.mailsuite.hostname
        import socket
        return socket.getfqdn()

    @property
    def local_domains(self):
        """Every domain delivered here, lower-cased, the hostname first."""
        names = [self.hostname.lower()] + [d.lower() for d in self.mailsuite.local_domains]
        return tuple(dict.fromkeys(names))

    def expand_user_path(self, template, home):
        """A path from the config where `~` means the given user's home."""
        if template.startswith("~"):
            return os.path.join(home, template[1:].lstrip("/"))
        return template


def config_path(explicit=None):
    """-C FILE wins, then $MAILSUITE_CONFIG, then the system file."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def _line_of(path, section, key):
    """Best-effort line number of KEY inside [SECTION], for error messages."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            current = None
            for number, line in enumerate(f, 1):
                stripped = line.strip()
                if stripped.startswith("[") and stripped.endswith("]"):
                    current = stripped[1:-1].strip()
                elif current == section and re.match(rf"{re.escape(key)}\s*[=:]", stripped, re.I):
                    return number
    except OSError:
        pass
    return 0


def load(path=None, *, required=False):
    """Read the config; a missing system file means all defaults.

    A file the user named (-C FILE or $MAILSUITE_CONFIG) must exist: falling
    back to the defaults would quietly act on the system's spool and queue.
    """
    required = required or bool(path or os.environ.get(ENV_VAR))
    path = config_path(path)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",),
                                       default_section="\0none")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except configparser.Error as exc:
        raise ConfigError(_describe_parse_error(path, exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None

    values = {}
    for section, keys in SCHEMA.items():
        values[section] = {name: PARSERS[key.type](key.default) for name, key in keys.items()}
    for section in parser.sections():
        if section not in SCHEMA:
            line = _section_line(path, section)
            raise ConfigError(f"{path}:{line}: unknown section [{section}]")
        for name, raw in parser.items(section):
            key = SCHEMA[section].get(name)
            if key is None:
                raise ConfigError(f"{path}:{_line_of(path, section, name)}: unknown key '{name}' in [{section}]")
            try:
                values[section][name] = PARSERS[key.type](raw)
            except ValueError as exc:
                raise ConfigError(f"{path}:{_line_of(path, section, name)}: {section}.{name}: {exc}") from None
    return Config(values, path)


def _section_line(path, section):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if line.strip() == f"[{section}]":
                    return number
    except OSError:
        pass
    return 0


def _describe_parse_error(path, exc):
    line = getattr(exc, "lineno", None)
    if line is None and getattr(exc, "errors", None):
        line = exc.errors[0][0]
    message = exc.message.splitlines()[0] if hasattr(exc, "message") else str(exc)
    if isinstance(exc, configparser.MissingSectionHeaderError):
        message = "key outside any [section]"
    elif isinstance(exc, configparser.DuplicateOptionError):
        message = f"key '{exc.option}' given twice in [{exc.section}]"
    elif isinstance(exc, configparser.DuplicateSectionError):
        message = f"section [{exc.section}] given twice"
    elif isinstance(exc, configparser.ParsingError):
        message = "not a 'key = value' line"
    return f"{path}:{line or 0}: {message}"


def example_text():
    """The documented example file, generated from the schema."""
    out = ["# mailsuite.conf — every key with its default.  See mailsuite.conf(5).", ""]
    for section, keys in SCHEMA.items():
        out.append(f"[{section}]")
        for name, key in keys.items():
            out.append(f"# {key.doc}")
            out.append(f"#{name} = {key.default}".rstrip())
        out.append("")
    return "\n".join(out)


def manual_keys():
    """The KEYS section of mailsuite.conf(5), generated from the schema like the example file."""
    out = []
    for section, keys in SCHEMA.items():
        out.append(f".SS [{section}]")
        for name, key in keys.items():
            default = _troff(key.default)
            doc = _troff(key.doc)
            value = f" \\fI{default}\\fR" if default else ""
            out += [".TP", f"\\fB{name}\\fR ={value}  ({key.type})", doc[0].upper() + doc[1:] + "."]
    return "\n".join(out)


def _troff(text):
    return text.replace("\\", "\\e").replace("-", "\\-")


def write_documents(example_path, manual_path):
    """Regenerate etc/mailsuite.conf and the KEYS section of mailsuite.conf(5) from the schema."""
    with open(example_path, "w", encoding="utf-8") as f:
        f.write(example_text() + "\n")
    with open(manual_path, encoding="utf-8") as f:
        page = f.read()
    begin = page.index("\n", page.index('.\\" BEGIN KEYS')) + 1
    end = page.index('.\\" END KEYS')
    with open(manual_path, "w", encoding="utf-8") as f:
        f.write(page[:begin] + manual_keys() + "\n" + page[end:])


if __name__ == "__main__":
    import sys
    write_documents(*sys.argv[1:3])
