"""The pop3d program's edge: --help, usage and configuration errors as sysexits with one line."""

import os
import socket
import subprocess

from conftest import program
from pop3lib import configure


def run(*args, env=None):
    return subprocess.run([program("pop3d"), *args], capture_output=True, timeout=30, env=env, input=b"")


def test_help():
    done = run("--help")
    assert done.returncode == 0 and b"usage: pop3d" in done.stdout


def test_unknown_option_is_a_usage_error():
    done = run("-x")
    assert done.returncode == os.EX_USAGE
    assert done.stderr.decode().count("\n") == 1 and "pop3d:" in done.stderr.decode()


def test_missing_config_named_with_c(tmp_path):
    done = run("-C", str(tmp_path / "missing.conf"), "-d")
    assert done.returncode == os.EX_CONFIG
    assert done.stderr.decode() == f"pop3d: {tmp_path / 'missing.conf'}: no such file\n"


def test_bad_listen_address(sandbox):
    configure(sandbox, {"pop3": {"listen": "nonsense"}})
    done = run("-C", sandbox.conf, "-d")
    assert done.returncode == os.EX_CONFIG
    assert done.stderr.decode() == "pop3d: [pop3] listen: not HOST:PORT: 'nonsense'\n"


def test_address_in_use(sandbox):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        configure(sandbox, {"pop3": {"listen": f"127.0.0.1:{busy.getsockname()[1]}"}})
        done = run("-C", sandbox.conf, "-d")
    assert done.returncode == os.EX_UNAVAILABLE
    assert "cannot listen" in done.stderr.decode().splitlines()[-1]


def test_implicit_tls_without_certificate(sandbox):
    configure(sandbox, {"pop3": {"listen": "", "listen_tls": "127.0.0.1:0"}})
    done = run("-C", sandbox.conf, "-d")
    assert done.returncode == os.EX_CONFIG
    assert "cert_file" in done.stderr.decode()
