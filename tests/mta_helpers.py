"""Helpers shared by the sendmail, queue and aliases tests."""

import os
import sys
import time

MESSAGE = b"Subject: hello\nTo: bob@localhost\n\nHi there.\n"


def spool_messages(path):
    """The messages of an mbox spool, parsed by Python's mailbox (a reader we did not write),
    without the pseudo-message that keeps an emptied folder's UID state (conftest.mbox_messages)."""
    from conftest import mbox_messages
    return mbox_messages(path) if path.exists() else []


def wait_for_messages(path, count, timeout=20.0):
    """Poll until the spool holds COUNT messages (delivery may run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        found = spool_messages(path)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def queue_files(sandbox, state):
    directory = sandbox.dir / "queue" / state
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def sendmail_path():
    return os.path.join(os.path.dirname(sys.executable), "sendmail")


def set_config(sandbox, section, key, value):
    """Add KEY = VALUE to [SECTION] of the sandbox's config file (the section may be new)."""
    text = _without_key(open(sandbox.conf).read(), section, key)
    if f"[{section}]\n" in text:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
    else:
        text += f"\n[{section}]\n{key} = {value}\n"
    with open(sandbox.conf, "w") as f:
        f.write(text)


def _without_key(text, section, key):
    """TEXT with any KEY line of [SECTION] removed (the sandbox may already set it)."""
    kept, current = [], None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
        elif current == section and stripped.split("=", 1)[0].strip() == key:
            continue
        kept.append(line)
    return "".join(kept)
