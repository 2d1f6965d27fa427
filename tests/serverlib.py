"""Test helpers shared by the server, auth and pop3 tests: configs, certificates, processes."""

import os
import signal
import ssl
import subprocess
from pathlib import Path

import peers

from mailsuite.core import config
from mailsuite.server import passwords

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"


def write_config(directory, sections=None, *, sandbox=True, users=("alice", "bob")):
    """A sandbox-style config in DIRECTORY with a passwd-file (password = user name)."""
    directory = Path(directory)
    spool = directory / "spool"
    spool.mkdir(exist_ok=True)
    passwd = directory / "passwd"
    if not passwd.exists():
        lines = []
        for name in users:
            home = directory / "home" / name
            home.mkdir(parents=True, exist_ok=True)
            lines.append(f"{name}:{passwords.hash_password(name)}:{os.getuid()}:{os.getgid()}:{name.title()}:{home}")
        passwd.write_text("\n".join(lines) + "\n")
    merged = {
        "mailsuite": {"spool_dir": str(spool), "passwd_file": str(passwd), "sandbox": "yes" if sandbox else "no",
                      "state_dir": str(directory / "state"), "log_socket": "",
                      "index_dir": str(directory / "index")},
        "auth": {"failure_delay": "0"},
    }
    for section, keys in (sections or {}).items():
        merged.setdefault(section, {}).update(keys)
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                   for s, keys in merged.items())
    path = directory / "mailsuite.conf"
    path.write_text(text)
    return str(path), config.load(str(path), required=True)


def make_certificate(directory):
    """A self-signed localhost certificate and key (PEM), made with the openssl CLI."""
    peers.require("openssl")
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def client_tls_context(cert):
    """A client context that trusts only the test certificate."""
    return ssl.create_default_context(cafile=cert)


def python_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(LIB) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def stop(proc, timeout=10):
    """Stop a process we started, by its pid, and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
