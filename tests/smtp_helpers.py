"""Test helpers for the SMTP tests: a mailsuite instance with its own config, a daemon on an ephemeral port."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import peers
from serverlib import stop

from mailsuite.core import config
from mailsuite.mta import queue
from mailsuite.server import passwords

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"

# Reply codes, named the way the RFC speaks of them.
S220_READY = 220
S221_BYE = 221
S235_AUTH_OK = 235
S250_OK = 250
S252_CANNOT_VRFY = 252
S354_START_DATA = 354
S421_CLOSING = 421
S452_TOO_MANY_RCPTS = 452
S500_UNKNOWN = 500
S501_SYNTAX = 501
S503_BAD_SEQUENCE = 503
S530_AUTH_REQUIRED = 530
S535_AUTH_FAILED = 535
S550_REJECTED = 550
S552_TOO_BIG = 552
S554_FAILED = 554

_DAEMON = """
import sys
from mailsuite.core import config
from mailsuite.core import log
from mailsuite.mta.smtp import daemon as smtpd
cfg = config.load(sys.argv[1], required=True)
daemon = smtpd.Daemon(cfg, log.setup(cfg, "smtpd"))
def ready(bound):
    print(" ".join(str(port) for _, port in bound), flush=True)
sys.exit(daemon.run(with_runner=sys.argv[2] == "runner", on_ready=ready))
"""


class Instance:
    """One mailsuite host: config, spool, queue, passwd-file (password = user name)."""

    def __init__(self, directory, *, domain="example.test", users=("alice", "bob"), **sections):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        passwd = self.dir / "passwd"
        lines = []
        for name in users:
            home = self.dir / "home" / name
            home.mkdir(parents=True, exist_ok=True)
            lines.append(f"{name}:{passwords.hash_password(name)}:{os.getuid()}:{os.getgid()}:{name.title()}:{home}")
        passwd.write_text("\n".join(lines) + "\n")
        (self.dir / "aliases").write_text("postmaster: alice\n")
        values = {
            "mailsuite": {"hostname": f"mx.{domain}", "local_domains": domain, "spool_dir": self.dir / "spool",
                          "state_dir": self.dir / "state", "passwd_file": passwd, "sandbox": "yes",
                          "log_socket": "", "index_dir": self.dir / "index",
                          "queue_dir": self.dir / "queue", "maildrop_dir": self.dir / "maildrop"},
            "queue": {"aliases": self.dir / "aliases", "default_privs": "",
                      "min_backoff": "1s", "max_backoff": "2s", "run_interval": "1s"},
            "smtp": {"listen": "127.0.0.1:0", "command_timeout": "20s", "connect_timeout": "5s"},
            "auth": {"failure_delay": "0"},
        }
        for section, keys in sections.items():
            values.setdefault(section, {}).update(keys)
        (self.dir / "spool").mkdir(exist_ok=True)
        self.conf = str(self.dir / "mailsuite.conf")
        Path(self.conf).write_text("".join(
            f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
            for section, keys in values.items()))
        self.cfg = config.load(self.conf, required=True)
        self.process = None
        self.ports = []
        self.netns = None                 # run inside this network namespace (root only)

    @property
    def port(self):
        return self.ports[0]

    def start(self, *, runner=False):
        """Run the daemon master (optionally with its queue runner); wait for its ports."""
        env = dict(os.environ, PYTHONPATH=str(LIB))
        self.log = open(self.dir / "daemon.log", "ab")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.process = subprocess.Popen(prefix + [sys.executable, "-c", _DAEMON, self.conf, "runner" if runner else "-"],
                                        stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("daemon did not start: " + (self.dir / "daemon.log").read_text())
        self.ports = [int(p) for p in line.split()]
        return self

    def stop(self):
        if self.process:
            stop(self.process, timeout=20)
            self.process.stdout.close()
            self.log.close()
        self.process = None

    def log_text(self):
        return (self.dir / "daemon.log").read_text(errors="replace")

    def queued(self):
        """[(Envelope, message bytes)] of everything in the queue, oldest first."""
        q = queue.Queue(self.cfg)
        found = []
        for _, qid in q.ids():
            envelope = q.load(qid)
            with open(q.locate(qid)[1], "rb") as f:
                f.seek(envelope.offset)
                found.append((envelope, f.read(envelope.size)))
        return found

    def connect(self, port=None):
        return RawClient(port or self.port)


class RawClient:
    """A bare socket client for hostile input that smtplib would not send."""

    def __init__(self, port, timeout=20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """(code, [lines]) of the next complete reply; (None, []) at EOF."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return (None, lines)
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode())
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def command(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def closed(self):
        """True when the server has closed the connection."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.sock.close()


def wait_for(predicate, timeout=30, interval=0.1):
    """Poll until PREDICATE() is true; the test fails if it never is (no timing assertions)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def free_port(*hosts):
    """A TCP port free on every one of HOSTS (for hosts that must share a port, like MX peers)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Dnsmasq:
    """A private DNS server on 127.0.0.1 answering only from its command line (MX, A, raw records)."""

    def __init__(self, directory, *, mx=(), hosts=(), records=(), local="test", address="127.0.0.1", port=None,
                 netns=None):
        binary = peers.require("dnsmasq")
        self.log_path = Path(directory) / "dnsmasq.log"
        for _attempt in range(20):             # a free port may be taken before dnsmasq binds it: try another
            self.port = port or free_udp_port()
            prefix = ["ip", "netns", "exec", netns] if netns else []
            args = prefix + [binary, "--no-daemon", f"--port={self.port}", f"--listen-address={address}",
                             "--bind-interfaces", "--no-resolv", "--no-hosts", f"--local=/{local}/", "--pid-file=",
                             "--log-facility=-", "--conf-file=/dev/null"]
            args += [f"--mx-host={domain},{host},{pref}" for domain, host, pref in mx]
            args += [f"--host-record={name},{address}" for name, address in hosts]
            args += [f"--dns-rr={name},{rtype},{data}" for name, rtype, data in records]
            self.log = open(self.log_path, "wb")
            self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log)
            try:
                wait_for(self._started, timeout=20)
                return
            except RuntimeError:
                self.log.close()
                if port or b"Address already in use" not in self.log_path.read_bytes():
                    raise
        raise RuntimeError("dnsmasq found no free port in 20 tries")

    def _started(self):
        if self.process.poll() is not None:
            raise RuntimeError("dnsmasq exited: " + self.log_path.read_text(errors="replace"))
        return b"started, version" in self.log_path.read_bytes()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


class ThrowawayPostfix:
    """A private Postfix instance: its own config, queue and data directories, one smtpd on 127.0.0.1:PORT.

    Needs root (the master starts as root and drops to the postfix user);
    the caller skips when `available()` says no."""

    BASE = {
        "compatibility_level": "3.6", "meta_directory": "/etc/postfix", "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4", "myhostname": "mx.p.test", "mydomain": "p.test", "mydestination": "",
        "mynetworks": "127.0.0.0/8", "relay_domains": "", "alias_maps": "", "alias_database": "",
        "smtp_dns_support_level": "disabled", "disable_dns_lookups": "yes", "maillog_file_prefixes": "/tmp",
        "smtpd_banner": "$myhostname ESMTP Postfix", "smtp_tls_security_level": "none",
        "default_process_limit": "100",
    }

    def __init__(self, settings=None, *, address="127.0.0.1", port=None, netns=None):
        import pwd
        import tempfile
        self.dir = Path(tempfile.mkdtemp(prefix="mailsuite-postfix-"))
        os.chmod(self.dir, 0o755)
        for name in ("conf", "queue", "data", "vmail"):
            (self.dir / name).mkdir()
        owner = pwd.getpwnam("postfix")
        for name in ("data", "vmail"):
            os.chown(self.dir / name, owner.pw_uid, owner.pw_gid)
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.port = port or free_port(address)
        self.maillog = self.dir / "maillog"
        values = dict(self.BASE, queue_directory=self.dir / "queue", data_directory=self.dir / "data",
                      maillog_file=self.maillog, inet_interfaces=address, virtual_mailbox_base=self.dir / "vmail")
        values.update(settings or {})
        (self.dir / "conf" / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
        (self.dir / "conf" / "master.cf").write_text(_master_cf(address, self.port))
        self._postfix("start")
        wait_for(lambda: "daemon started" in self.log_text(), timeout=30)

    def _postfix(self, action):
        return subprocess.run(self.prefix + ["postfix", "-c", str(self.dir / "conf"), action],
                              capture_output=True, text=True, timeout=60)

    def log_text(self):
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def stop(self):
        self._postfix("stop")
        wait_for(lambda: not (self.dir / "data" / "master.lock").exists() or not self._master_alive(), timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _master_alive(self):
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
            return True
        except (OSError, ValueError, IndexError):
            return False


def _master_cf(address, port):
    """Debian's master.cf with our one smtpd listener and no chroot (the queue is a temporary directory)."""
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line.startswith("smtp ") and len(fields) > 1 and fields[1] == "inet":
            continue
        if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
            fields[4] = "n"
            line = " ".join(fields)
        lines.append(line)
    lines.append(f"{address}:{port} inet n - n - - smtpd")
    return "\n".join(lines) + "\n"
