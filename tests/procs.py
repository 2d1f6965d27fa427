"""Test support for daemons: a system-mode installation, starting a listener, finding its children.

Shared by the privilege tests of every server and the queue runner tests,
so each of them starts and stops processes the same way, by PID.
"""

import grp
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from mailsuite.server.passwords import hash_password

LISTENING = re.compile(r"127\.0\.0\.1:(\d+)")


def children_of(pid):
    """PIDs whose parent is PID, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def descendants(pid):
    """Every process below PID (children, their children...), from /proc."""
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def runner_of(master, queue_dir):
    """The SMTP daemon MASTER's queue runner: its child that holds the runner lock; None if none does."""
    lock = os.path.join(queue_dir, "runner.lock")
    for pid in children_of(master):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == lock for fd in os.listdir(f"/proc/{pid}/fd")):
                return pid
        except OSError:
            continue
    return None


def system_installation(section, users, *, root_login=False):
    """A system-mode (not sandbox) installation in a fresh directory every uid can traverse.

    `users` maps name -> uid; each gets a home and a 0600 spool holding one
    message.  The daemon of `section` listens on an ephemeral port.
    Returns (directory, config path); remove the directory when done.
    """
    top = Path(tempfile.mkdtemp(prefix="mailsuite-system-"))
    top.chmod(0o755)
    mail_gid = grp.getgrnam("mail").gr_gid
    spool = top / "spool"
    spool.mkdir()
    os.chown(spool, 0, mail_gid)
    spool.chmod(0o2775)
    lines = []
    for name, uid in users.items():
        home = top / "home" / name
        home.mkdir(parents=True)
        os.chown(home, uid, uid)
        box = spool / name
        box.write_bytes(f"From x@example.org Mon Nov 23 10:00:00 2026\nSubject: for {name}\n\nhi\n".encode())
        os.chown(box, uid, mail_gid)
        box.chmod(0o600)
        lines.append(f"{name}:{hash_password(name)}:{uid}:{uid}:{name}:{home}\n")
    if root_login:
        lines.append(f"root:{hash_password('root')}:0:0:root:/root\n")
    (top / "passwd").write_text("".join(lines))
    conf = top / "mailsuite.conf"
    conf.write_text(f"[mailsuite]\nspool_dir = {spool}\npasswd_file = {top / 'passwd'}\nlog_socket =\n"
                    f"state_dir = {top / 'state'}\n\n[auth]\nfailure_delay = 0\npam = no\n\n"
                    f"[{section}]\nlisten = 127.0.0.1:0\n")
    return top, conf


def start_listener(argv):
    """Start a `-d` daemon that logs its bound address on stderr; (process, port)."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = LISTENING.search(line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(m.group(1))
    proc.wait(10)
    raise AssertionError(f"{argv[0]} did not start (status {proc.returncode})")


def stop_listener(proc, top=None):
    """Stop a daemon and its session children, by PID; remove its installation directory."""
    for pid in children_of(proc.pid):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass                                    # the session ended on its own meanwhile
    proc.terminate()
    proc.wait(10)
    if top is not None:
        shutil.rmtree(top)
