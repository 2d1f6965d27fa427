"""The interactive composer and its tilde escapes (`~s`, `~e`, `~.`, ...).

A line that starts with `~` is a command to the composer, not text of the
letter; `~~` writes a literal tilde.  The escapes are a table from letter to
handler, as in mailx's collect.c.  The letter ends on `.` alone on a line,
`~.` or end of input (Ctrl-D).  One interrupt (Ctrl-C) warns, a second one
abandons the letter and keeps it in ~/dead.letter; `~q` does the same on
purpose and `~x` abandons it without a trace.
"""

import os
import shlex
import subprocess
import tempfile

from . import compose


class Abort(Exception):
    """The letter was abandoned; `save` says whether it goes to ~/dead.letter."""

    def __init__(self, save):
        super().__init__("letter abandoned")
        self.save = save


class Composer:
    """Reads the body of DRAFT from the terminal, obeying tilde escapes.

    CONTEXT supplies what escapes need beyond the draft: `options`,
    `write(text)`, `read_line(prompt, prefill)` (raises EOFError at end of
    input) and `quote(words, indent)` (the text of messages for ~m/~f, or
    None when no folder is open).
    """

    def __init__(self, draft, context):
        self.draft = draft
        self.ctx = context
        self.lines = draft.body.splitlines() if draft.body else []

    def run(self):
        """Collect the body; returns the finished draft or raises Abort."""
        try:
            self._collect()
        finally:
            self._finish()                  # whatever ends the letter, the draft holds what was typed
        self.ctx.write("EOT\n")
        return self.draft

    def _collect(self):
        interrupts = 0
        while True:
            try:
                line = self.ctx.read_line("", "")
            except EOFError:
                if self.ctx.options.on("ignoreeof"):
                    self.ctx.write("Use \".\" to terminate letter\n")
                    continue
                return
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts >= 2:
                    raise Abort(save=self.ctx.options.on("save")) from None
                self.ctx.write("\n(Interrupt -- one more to kill letter)\n")
                continue
            interrupts = 0
            if line == "." and self.ctx.options.on("dot"):
                return
            if line.startswith("~") and len(line) > 1 and line[1] != "~":
                if self._escape(line[1], line[2:].strip()) == "end":
                    return
                continue
            self.lines.append(line[1:] if line.startswith("~~") else line)

    def _finish(self):
        self.draft.body = "\n".join(self.lines) + ("\n" if self.lines else "")

    def _escape(self, letter, arg):
        handler = ESCAPES.get(letter)
        if handler is None:
            self.ctx.write(f"Unknown tilde escape: ~{letter}  (~? lists them)\n")
            return None
        try:
            return handler[0](self, arg)
        except OSError as exc:
            self.ctx.write(f"~{letter}: {exc.filename or arg}: {exc.strerror}\n")
        return None

    # --- headers ---

    def subject(self, arg):
        self.draft.subject = arg

    def add_to(self, arg):
        self.draft.to += compose.split_addresses(arg)

    def add_cc(self, arg):
        self.draft.cc += compose.split_addresses(arg)

    def add_bcc(self, arg):
        self.draft.bcc += compose.split_addresses(arg)

    def edit_headers(self, _arg):
        d, ask = self.draft, self.ctx.read_line
        d.to = compose.split_addresses(ask("To: ", ", ".join(d.to)))
        d.subject = ask("Subject: ", d.subject)
        d.cc = compose.split_addresses(ask("Cc: ", ", ".join(d.cc)))
        d.bcc = compose.split_addresses(ask("Bcc: ", ", ".join(d.bcc)))

    def attach(self, arg):
        """~@ FILE...: attach each; with no name, ask for one per line until an empty line."""
        for name in shlex.split(arg) if arg else self._asked_names():
            path = os.path.expanduser(name)
            with open(path, "rb"):
                pass                          # fail now, not when sending
            self.draft.attachments.append(path)
            self.ctx.write(f"Attached {path}\n")

    def _asked_names(self):
        while True:
            try:
                name = self.ctx.read_line("Attach file (empty line ends): ", "").strip()
            except EOFError:
                return
            if not name:
                return
            yield name

    # --- body ---

    def read_file(self, arg):
        if not arg:
            self.ctx.write("~r: file name needed\n")
            return
        path = os.path.expanduser(arg)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.lines += text.splitlines()
        self.ctx.write(f'"{path}" {text.count(chr(10))}/{len(text.encode())}\n')

    def write_file(self, arg):
        if not arg:
            self.ctx.write("~w: file name needed\n")
            return
        path = os.path.expanduser(arg)
        self._finish()
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.draft.body)
        self.ctx.write(f'"{path}" {len(self.lines)}/{len(self.draft.body.encode())}\n')

    def edit(self, _arg, variable="EDITOR"):
        editor = self.ctx.options.get(variable) or os.environ.get(variable) or "vi"
        self._finish()
        fd, path = tempfile.mkstemp(prefix="mail.", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.draft.body)
            subprocess.run(shlex.split(editor) + [path])
            with open(path, encoding="utf-8", errors="replace") as f:
                self.lines = f.read().splitlines()
        finally:
            os.unlink(path)
        self.ctx.write("(continue)\n")

    def visual(self, arg):
        self.edit(arg, "VISUAL")

    def show(self, _arg):
        d = self.draft
        out = ["-------", "Message contains:"]
        for name, value in (("To", ", ".join(d.to)), ("Cc", ", ".join(d.cc)),
                            ("Bcc", ", ".join(d.bcc)), ("Subject", d.subject)):
            if value:
                out.append(f"{name}: {value}")
        out += [f"Attachment: {a}" for a in d.attachments]
        out.append("")
        self.ctx.write("\n".join(out + self.lines) + "\n(continue)\n")

    def insert_quoted(self, arg):
        self._insert(arg, self.ctx.options.get("indentprefix", "> "))

    def insert_plain(self, arg):
        self._insert(arg, "")

    def _insert(self, arg, indent):
        text = self.ctx.quote(arg, indent)
        if text is None:
            self.ctx.write("No messages to insert from.\n")
            return
        self.lines += text.splitlines()
        self.ctx.write("(continue)\n")

    def sign(self, _arg):
        signature = self.ctx.options.get("sign")
        if signature:
            self.lines += signature.replace("\\n", "\n").splitlines()

    def shell(self, arg):
        subprocess.run(["/bin/sh", "-c", arg or os.environ.get("SHELL", "/bin/sh")])
        self.ctx.write("!\n")

    def pipe(self, arg):
        if not arg:
            self.ctx.write("~|: command needed\n")
            return
        self._finish()
        done = subprocess.run(["/bin/sh", "-c", arg], input=self.draft.body.encode(), stdout=subprocess.PIPE)
        if done.returncode != 0:
            self.ctx.write(f"~|: {arg}: exit status {done.returncode}, message unchanged\n")
            return
        self.lines = done.stdout.decode("utf-8", "replace").splitlines()
        self.ctx.write("(continue)\n")

    # --- leaving ---

    def end(self, _arg):
        return "end"

    def quit(self, _arg):
        raise Abort(save=True)

    def discard(self, _arg):
        raise Abort(save=False)

    def help(self, _arg):
        width = max(len(usage) for _, usage, _ in ESCAPES.values())
        lines = [f"~{usage:<{width}}  {text}" for _, usage, text in ESCAPES.values()]
        self.ctx.write("-" * 60 + "\n" + "\n".join(lines) + "\n~~text" + " " * (width - 4)
                       + "  a line starting with ~\n" + "-" * 60 + "\n")


# letter -> (handler, usage, help); the order is the order of ~? output.
ESCAPES = {
    "s": (Composer.subject, "s subject", "set the subject"),
    "t": (Composer.add_to, "t names", "add to the To: list"),
    "c": (Composer.add_cc, "c names", "add to the Cc: list"),
    "b": (Composer.add_bcc, "b names", "add to the Bcc: list"),
    "h": (Composer.edit_headers, "h", "edit To, Subject, Cc and Bcc"),
    "@": (Composer.attach, "@ [file...]", "attach files (asks for names when none is given)"),
    "r": (Composer.read_file, "r file", "read a file into the message"),
    "w": (Composer.write_file, "w file", "write the message body to a file"),
    "e": (Composer.edit, "e", "edit the message with $EDITOR"),
    "v": (Composer.visual, "v", "edit the message with $VISUAL"),
    "p": (Composer.show, "p", "print the message so far"),
    "m": (Composer.insert_quoted, "m list", "insert messages, indented"),
    "f": (Composer.insert_plain, "f list", "insert messages as they are"),
    "a": (Composer.sign, "a", "insert the `sign' variable"),
    "!": (Composer.shell, "! command", "run a shell command"),
    "|": (Composer.pipe, "| command", "pipe the body through a command"),
    ".": (Composer.end, ".", "end the message and send it"),
    "q": (Composer.quit, "q", "abandon the message, keep it in ~/dead.letter"),
    "x": (Composer.discard, "x", "abandon the message, keep nothing"),
    "?": (Composer.help, "?", "this list"),
}
