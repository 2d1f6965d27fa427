"""What one run of `mail` knows: the user, options, open folder, terminal.

Commands and the composer reach everything through a `Session`: output
(paged when long), input (with readline when on a terminal), paths with
mailx's shorthands (`+name` in the folder directory, `&` for ~/mbox, `%`
for the spool), selection of message lists, and sending a finished draft
through sendmail with ~/dead.letter as the safety net.
"""

import importlib
import os
import shutil
import subprocess
import sys

from ..store.locking import LockTimeout
from ..store.mailbox import MailboxError
from . import compose, mime_view, msglist, summary
from .folder import Folder, append_messages


class HangUp(BaseException):
    """The terminal went away (SIGHUP): keep the letter, leave the mailbox alone, stop.

    A BaseException, like KeyboardInterrupt, so no command's error handling can swallow it.
    """


class CommandError(Exception):
    """A command could not do what was asked; the text is shown as one line."""


class Session:
    def __init__(self, cfg, user, options, *, me, home, interactive):
        self.cfg = cfg
        self.user = user               # whose spool `%` is
        self.me = me                   # who owns the personal files under home (None: unknown uid)
        self.options = options
        self.home = home
        self.interactive = interactive
        self.folder = None
        self.current = 0
        self.shown_current = False     # Enter prints the current message once before moving on
        self.done = False
        self.page_start = 1            # first summary line `z` pages from
        self.told_new_mail = False     # "New mail has arrived" is said once per arrival
        if interactive:
            _enable_line_editing()

    # --- terminal ---

    def write(self, text):
        sys.stdout.buffer.write(mime_view.for_terminal(text))
        sys.stdout.flush()

    def warn(self, text):
        sys.stdout.flush()
        print(f"mail: {text}", file=sys.stderr, flush=True)

    def read_line(self, prompt="", prefill=""):
        """One line from the user; EOFError at end of input, KeyboardInterrupt on ^C."""
        if prefill and self.interactive:
            readline = importlib.import_module("readline")
            readline.set_startup_hook(lambda: readline.insert_text(prefill))
            try:
                return input(prompt)
            finally:
                readline.set_startup_hook()
        if not self.interactive:               # commands from a file or pipe: no prompts in the output
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\n")
        return input(prompt)

    def confirm(self, question):
        """Ask a yes/no QUESTION at the terminal; no, without asking, when commands come from a file or pipe."""
        if not self.interactive:
            return False
        try:
            answer = self.read_line(f"{question} [y/N] ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    def screen_rows(self):
        return shutil.get_terminal_size((80, 24)).lines

    def page(self, text):
        """Show TEXT, through $PAGER when it is longer than `crt` lines on a terminal."""
        if self.options.on("crt") and sys.stdout.isatty():
            limit = self.options.number("crt", self.screen_rows())
            if text.count("\n") > limit:
                pager = os.environ.get("PAGER") or "more"
                sys.stdout.flush()
                try:
                    subprocess.run(["/bin/sh", "-c", pager], input=mime_view.for_terminal(text))
                    return
                except OSError:
                    pass
        self.write(text)

    # --- the open folder ---

    def open_folder(self, path, *, system):
        """Open PATH as the current folder; the current message is the first new (else unread, else first) one."""
        self.folder = Folder(path, self.cfg, self.user if system else self.me, system=system).open()
        messages = self.folder.messages
        first = (next((m for m in messages if m.new), None) or next((m for m in messages if not m.read), None)
                 or (messages[0] if messages else None))
        self.current = first.number if first else 0
        self.shown_current = False
        self.page_start = 1
        return self.folder

    def folder_status(self):
        f = self.folder
        if not f:
            return "No folder"
        shown = f.path.replace(self.home, "~", 1) if f.path.startswith(self.home + "/") else f.path
        count = len(f.messages)
        new = f.count_new()
        unread = f.count_unread() - new
        deleted = sum(1 for m in f.messages if m.deleted)
        text = f'"{shown}": {count} message{"s" if count != 1 else ""}'
        for number, word in ((new, "new"), (unread, "unread"), (deleted, "deleted")):
            if number:
                text += f" {number} {word}"
        return text

    def leave_folder(self, *, apply):
        """Close the folder; APPLY (quit) writes the session's marks back, else (exit) nothing changes.

        If writing back fails the folder stays open, so the user can try again or `exit`.
        """
        folder = self.folder
        if folder is None:
            return
        if apply:
            moved, kept = folder.quit(self.mbox_path, self.me, hold=self.options.on("hold"),
                                      keepsave=self.options.on("keepsave"))
            if moved:
                self.write(f"Saved {moved} message{'s' if moved != 1 else ''} in {self.mbox_path}\n")
            if kept and folder.system:
                self.write(f"Held {kept} message{'s' if kept != 1 else ''} in {folder.path}\n")
        folder.close()
        self.folder = None

    def switch_folder(self, path):
        self.leave_folder(apply=True)
        self.open_folder(path, system=os.path.abspath(path) == os.path.abspath(self.user.spool))
        self.write(self.folder_status() + "\n")

    # --- files ---

    @property
    def mbox_path(self):
        return self.expand_path(self.options.get("MBOX") or "~/mbox")

    @property
    def dead_letter(self):
        return self.expand_path(self.options.get("DEAD") or "~/dead.letter")

    @property
    def folder_dir(self):
        """The `folder` option: ~/mail unless set; relative names are under the home directory."""
        folder = self.options.get("folder") or "mail"
        return os.path.join(self.home, folder) if not folder.startswith(("/", "~")) else self.expand_path(folder)

    def expand_path(self, name):
        """mailx file shorthands: ~ home, +name folder directory, & ~/mbox, % the spool."""
        if name == "&":
            return self.mbox_path
        if name == "%":
            return self.user.spool
        if name.startswith("+"):
            return os.path.join(self.folder_dir, name[1:])
        if name == "~" or name.startswith("~/"):
            return os.path.join(self.home, name[2:])
        return os.path.expanduser(name)

    # --- message lists ---

    def select(self, words, *, deleted=False):
        """Message states named by WORDS; raises msglist.MsgListError."""
        messages = self.folder.messages if self.folder else []
        if not messages:
            raise msglist.MsgListError("no messages")
        return [messages[n - 1] for n in msglist.select(words, messages, self.current, deleted=deleted)]

    def quote(self, arg, indent):
        """Text of the messages ARG names (default: current) for ~m/~f; None without a folder."""
        if not self.folder or not self.folder.messages:
            return None
        return "".join(self.quoted(m, indent) for m in self.select(msglist.split(arg)))

    def quoted(self, m, indent):
        """The inline text of message M under 'On DATE, SENDER wrote:', each line prefixed."""
        body = mime_view.body_text(self.folder.read(m))
        lines = [f"{indent}{line}".rstrip() for line in body.split("\n")]
        return f"On {summary.short_date(m)}, {summary.sender_name(m)} wrote:\n" + "\n".join(lines) + "\n"

    def set_current(self, m):
        if m.number != self.current:
            self.shown_current = False
        self.current = m.number

    # --- sending ---

    def send(self, draft):
        """Expand aliases, build, record and hand DRAFT to sendmail; False if it failed."""
        draft.to = self.options.expand(draft.to)
        draft.cc = self.options.expand(draft.cc)
        draft.bcc = self.options.expand(draft.bcc)
        domain = self.cfg.mail.from_domain or self.cfg.hostname
        if not draft.from_addr:
            draft.from_addr = self.options.get("from") or compose.default_from(self.user, domain)
        try:
            message = compose.build(draft, message_id_domain=domain)
        except OSError as exc:
            self.warn(f"{exc.filename}: {exc.strerror}")
            self.save_dead(draft)
            return False
        except compose.DraftError as exc:
            self.warn(str(exc))
            return False
        sender = None
        if self.cfg.mailsuite.sandbox or self.options.get("from"):
            sender = compose.envelope_address(draft.from_addr)
        try:
            compose.sendmail(self.cfg.mail.sendmail, message, draft.recipients(), sender=sender,
                             config_path=self.cfg.path, verbose=self.options.on("verbose"))
        except compose.SendError as exc:
            self.warn(f"{exc}; message saved in {self.dead_letter}")
            self.save_dead(draft, message)
            return False
        record = self.options.get("record")
        if record:
            self.append_to(self.expand_path(record), message)
        return True

    def save_dead(self, draft, message=None):
        """Keep an unsent letter in ~/dead.letter (an mbox, so `mail -f` reads it back)."""
        if message is None:
            try:
                message = compose.build(draft, message_id_domain=self.cfg.hostname)
            except OSError:                      # an attachment went away: keep the text at least
                draft.attachments = []
                message = compose.build(draft, message_id_domain=self.cfg.hostname)
            except compose.DraftError:
                return
        self.append_to(self.dead_letter, message)

    def append_to(self, path, message, flags=frozenset("RO")):
        try:
            append_messages(path, self.cfg, self.me, [(message, None, flags)], sender=self.user.name)
        except OSError as exc:
            self.warn(f"{path}: cannot append: {exc.strerror}")
            return False
        except (MailboxError, LockTimeout) as exc:
            self.warn(f"cannot append: {exc}")
            return False
        return True


def _enable_line_editing():
    """Loading readline is what gives input() line editing and history."""
    try:
        importlib.import_module("readline")
    except ImportError:
        pass
