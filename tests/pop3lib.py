"""Helpers for the pop3d tests: sandbox settings, delivery, a running pop3d -d."""

import configparser
import os
import poplib
import re
import signal
import subprocess
import time

from conftest import need, program
from procs import children_of

from mailsuite.core import config
from mailsuite.core.users import UserDB
from mailsuite.lda.deliver import deliver
from mailsuite.store.prepare import prepare_bytes

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


def configure(sandbox, settings):
    """Set {section: {key: value}} in the sandbox's config file and reload sandbox.cfg."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(sandbox.conf)
    for section, keys in settings.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in keys.items():
            parser.set(section, key, str(value))
    with open(sandbox.conf, "w") as f:
        parser.write(f)
    sandbox.cfg = config.load(sandbox.conf, required=True)


def message(subject, body="Hello.\n", sender="carol@example.org"):
    return (f"From: {sender}\nTo: alice@localhost\nSubject: {subject}\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\n\n{body}").encode()


def deliver_to(sandbox, user, data, sender="carol@example.org"):
    prepared = prepare_bytes(data)
    try:
        deliver(sandbox.cfg, UserDB(sandbox.cfg).lookup(user), prepared, sender=sender)
    finally:
        prepared.close()


class Pop3d:
    """pop3d -d on an ephemeral port of 127.0.0.1, stopped by pid."""

    def __init__(self, sandbox, settings=None):
        merged = {"pop3": {"listen": "127.0.0.1:0"}, "auth": {"failure_delay": "0"}}
        for section, keys in (settings or {}).items():
            merged.setdefault(section, {}).update(keys)
        configure(sandbox, merged)
        self.proc = subprocess.Popen([program("pop3d"), "-C", sandbox.conf, "-d"], stderr=subprocess.PIPE,
                                     env=sandbox.env)
        self.log = b""
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("pop3d exited: " + self.log.decode(errors="replace"))
            self.log += line
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                break

    def client(self, user=None, timeout=10):
        pop = poplib.POP3("127.0.0.1", self.port, timeout=timeout)
        if user:
            pop.user(user)
            pop.pass_(user)
        return pop

    def sessions(self):
        """PIDs of the session processes the listener forked."""
        return children_of(self.proc.pid)

    def stop(self):
        """SIGTERM the sessions still running (by pid), then the listener."""
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()




def wire_octets(lines):
    """Octets of a multi-line reply as sent: poplib gives lines unstuffed, without CRLF."""
    return sum(len(line) + 2 + line.startswith(b".") for line in lines)


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def fetchmail(sandbox, server, tmp_path, *options):
    """One fetchmail run for alice, delivering each message to bob with our mail.local."""
    home = tmp_path / "fetchmail-home"
    home.mkdir(exist_ok=True)
    rc = home / ".fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 port {server.port} protocol pop3 user alice password alice is bob here\n')
    rc.chmod(0o600)
    env = dict(sandbox.env, HOME=str(home), FETCHMAILHOME=str(home))
    done = subprocess.run([need("fetchmail"), "-f", str(rc), "--nodetach", "--sslproto", "", "--uidl",
                           "--pidfile", str(home / "fetchmail.pid"),            # as root: not /var/run's
                           "--mda", f"{program('mail.local')} -C {sandbox.conf} -f %F bob", *options],
                          env=env, capture_output=True, timeout=120)
    # fetchmail exits 1 when there was no mail
    assert done.returncode in (0, 1), done.stderr.decode()
    return done
