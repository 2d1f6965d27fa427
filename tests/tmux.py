"""A full-screen program (mutt, s-nail) driven in a private tmux server and read off its screen."""

import itertools
import os
import subprocess
import time

from conftest import need

_SOCKETS = itertools.count()


class Tmux:
    """A private tmux server running one full-screen program, read with capture-pane."""

    def __init__(self, command, directory):
        need("tmux")
        self.socket = os.path.join(directory, f".tmux-{next(_SOCKETS)}")
        subprocess.run(["tmux", "-S", self.socket, "new-session", "-d", "-s", "m", "-x", "120", "-y", "30",
                        command + "; sleep 30"], check=True)

    def screen(self):
        return subprocess.run(["tmux", "-S", self.socket, "capture-pane", "-p", "-t", "m"],
                              capture_output=True, text=True).stdout

    def wait_for(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen) or time.monotonic() > deadline:
                return screen
            time.sleep(0.1)

    def keys(self, *keys):
        subprocess.run(["tmux", "-S", self.socket, "send-keys", "-t", "m", *keys], check=True)

    def close(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def mutt(path, home, *, readonly=True, settings=""):
    """mutt on the mbox PATH, with no configuration but SETTINGS (muttrc lines)."""
    need("mutt")
    os.makedirs(os.path.join(home, "Mail"), exist_ok=True)
    muttrc = "/dev/null"
    if settings:
        muttrc = os.path.join(home, f".muttrc-{next(_SOCKETS)}")
        with open(muttrc, "w") as f:
            f.write(settings)
    return Tmux(f"env HOME={home} TERM=screen LC_ALL=C.UTF-8 mutt -F {muttrc} {'-R ' if readonly else ''}-f {path}",
                home)
