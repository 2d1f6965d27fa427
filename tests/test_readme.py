"""The README's sandbox walk-through, run as it stands, against a sandbox started as `make demo` starts it.

The walk-through names the sandbox's fixed ports (2525, 1100, 1430), so the
test runs it in a network namespace of its own, where those ports are free
whatever else runs on the machine.  Every line runs verbatim with bash;
mutt, which needs a terminal, runs in tmux and is read off the screen.
"""

import os
import re
import shutil
import subprocess
import time

import peers
import pytest
from conftest import REPO

pytestmark = [pytest.mark.root, peers.needs("ip", "swaks", "fetchmail", "mutt", "tmux")]


def walk_through():
    """The lines of the code block that follows the walk-through marker in README.md."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("<!-- walk-through: tests/test_readme.py -->"):].split("\n")[1:]
    lines = []
    for line in block:
        if not line.startswith("    ") and line.strip():
            break
        lines.append(line[4:])
    return "\n".join(lines).strip("\n").split("\n")


def split_at(lines, prefix):
    """(lines before the first one starting with PREFIX, that line, the rest)."""
    index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    return lines[:index], lines[index], lines[index + 1:]


class Namespace:
    def __init__(self):
        self.name = f"msreadme{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def command(self, argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    """A directory laid out as a checkout after `make demo`: the venv, and the sandbox it runs."""
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    namespace = Namespace()
    up = subprocess.Popen(namespace.command([str(REPO / ".venv" / "bin" / "mailsuite"), "up", "--dir", "sandbox"]),
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = ""
        for line in up.stdout:
            banner += line
            if "Ctrl-C stops everything" in line:
                break
        assert "IMAP" in banner, banner
        yield tmp_path, namespace
    finally:
        up.terminate()
        up.wait(60)
        namespace.delete()


def run_lines(checkout, namespace, lines):
    script = "set -e\n" + "\n".join(lines) + "\n"
    done = subprocess.run(namespace.command(["bash", "-c", script]), cwd=checkout, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_readme_walk_through_works_as_written(checkout):
    directory, namespace = checkout
    lines = walk_through()
    export = lines[0]
    assert export.startswith("export MAILSUITE_CONFIG=")
    before_fetch, fetch, rest = split_at(lines, "fetchmail ")
    _, mutt, after = split_at(rest, "mutt ")
    assert after == []
    run_lines(directory, namespace, before_fetch)
    spool = directory / "sandbox" / "spool" / "alice"
    subjects = ("first mail", "test ", "delivered by mail.local")       # swaks's subject starts "test "
    wait_for(lambda: all(f"Subject: {s}" in spool.read_text(errors="replace") for s in subjects),
             "the walk-through's mail never reached alice's spool")

    fetched = run_lines(directory, namespace, [export, fetch])
    assert "Hello from the local delivery agent." in fetched and "hello" in fetched

    socket_name = f"readme{os.getpid()}"
    tmux = shutil.which("tmux")
    subprocess.run(namespace.command([tmux, "-L", socket_name, "new-session", "-d", "-x", "120", "-y", "30",
                                      "-c", str(directory), f"{export}; {mutt}"]), check=True)
    try:
        def screen():
            return subprocess.run([tmux, "-L", socket_name, "capture-pane", "-p"], capture_output=True,
                                  text=True).stdout
        wait_for(lambda: "delivered by mail.local" in screen(), "mutt never showed alice's inbox")
        assert re.search(r"first mail", screen())
        subprocess.run([tmux, "-L", socket_name, "send-keys", "q"], check=True)
        wait_for(lambda: subprocess.run([tmux, "-L", socket_name, "has-session"], capture_output=True).returncode,
                 "mutt did not quit on q")
    finally:
        subprocess.run([tmux, "-L", socket_name, "kill-server"], capture_output=True)
