"""Start-up files and the options they set: /etc/mail.rc, then ~/.mailrc.

The same commands work in the files and at the `?` prompt: `set`/`unset`
(`set crt=24 hold`, `set noask`), `alias`/`group`, `ignore`/`retain` (and
their `discard`/`unignore`/`unretain` spellings).  `if r|s|t ... else ...
endif` is honoured the way BSD mail does (receiving, sending, terminal),
so the stock Debian /etc/mail.rc reads without complaint.
"""

import os
import shlex

from ..store.format import HIDDEN_HEADERS


class RcError(Exception):
    """A line of a start-up file or a command that could not be understood."""


# Values an option has before any file sets it (mailx's documented defaults).
DEFAULTS = {
    "header": "",           # show the summary on start-up
    "save": "",             # keep ~/dead.letter on interrupt
    "dot": "",              # a lone "." ends a letter
    "quote": "",            # replies quote the original
    "asksub": "",           # ask for a subject when composing on a terminal
    "indentprefix": "> ",
    "toplines": "5",
    "screen": "",           # summary page height: the terminal's when empty
    "crt": "",              # page text longer than the terminal (a number: longer than that); unset crt: never
}


# The store's own headers (flags, UIDs, padding) mean nothing to a reader, as in POP3 and IMAP; `P` still shows them.
STORE_HEADERS = {name.decode() for name in HIDDEN_HEADERS}


class Options:
    """Variables, aliases and header filters: the state `.mailrc` shapes."""

    def __init__(self):
        self.variables = dict(DEFAULTS)
        self.aliases = {}
        self.ignored = set(STORE_HEADERS)
        self.retained = set()

    # --- variables ---

    def get(self, name, default=None):
        return self.variables.get(name, default)

    def on(self, name):
        return name in self.variables

    def number(self, name, default):
        try:
            return int(self.variables.get(name) or default)
        except ValueError:
            return default

    def set(self, words):
        for word in words:
            name, eq, value = word.partition("=")
            if not name:
                raise RcError(f"set: bad option: {word}")
            if name.startswith("no") and not eq and name not in ("noop",):
                self.variables.pop(name[2:], None)
            else:
                self.variables[name] = value

    def unset(self, words):
        for name in words:
            self.variables.pop(name, None)

    # --- aliases ---

    def alias(self, words):
        if len(words) < 2:
            raise RcError("alias: usage: alias NAME ADDRESS...")
        self.aliases.setdefault(words[0], []).extend(words[1:])

    def unalias(self, words):
        for name in words:
            self.aliases.pop(name, None)

    def expand(self, addresses, _seen=None):
        """Replace alias names by their members, recursively, once each."""
        seen = set() if _seen is None else _seen
        out = []
        for addr in addresses:
            if addr in self.aliases and addr not in seen:
                seen.add(addr)
                out.extend(self.expand(self.aliases[addr], seen))
            else:
                out.append(addr)
        return list(dict.fromkeys(out))

    # --- header filters ---

    def ignore(self, words):
        self.ignored.update(w.lower() for w in words)

    def retain(self, words):
        self.retained.update(w.lower() for w in words)

    def unignore(self, words):
        self.ignored.difference_update(w.lower() for w in words)

    def unretain(self, words):
        self.retained.difference_update(w.lower() for w in words)

    def shows_header(self, name):
        """Whether `print` shows header NAME (`retain` wins over `ignore`)."""
        name = name.lower()
        if name in STORE_HEADERS:
            return False
        if self.retained:
            return name in self.retained
        return name not in self.ignored


# The commands a start-up file may use, with the Options method each calls.
RC_COMMANDS = {
    "set": Options.set, "se": Options.set,
    "unset": Options.unset, "uns": Options.unset,
    "alias": Options.alias, "a": Options.alias, "group": Options.alias, "g": Options.alias,
    "unalias": Options.unalias,
    "ignore": Options.ignore, "ig": Options.ignore, "discard": Options.ignore, "di": Options.ignore,
    "unignore": Options.unignore, "undiscard": Options.unignore,
    "retain": Options.retain, "ret": Options.retain,
    "unretain": Options.unretain,
}


def split_words(text):
    try:
        return shlex.split(text, comments=False)
    except ValueError as exc:
        raise RcError(str(exc)) from None


def load(options, path, *, sending, warn):
    """Read one start-up file into OPTIONS; a missing file is fine, a bad line is a warning."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        warn(f"{path}: {exc.strerror}")
        return
    skipping = []                       # stack of "this branch is off"
    for number, line in enumerate(_joined(lines), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "if":
            skipping.append(not _condition(rest.strip(), sending))
            continue
        if word == "else" and skipping:
            skipping[-1] = not skipping[-1]
            continue
        if word == "endif" and skipping:
            skipping.pop()
            continue
        if any(skipping):
            continue
        handler = RC_COMMANDS.get(word)
        if handler is None:
            warn(f"{path}:{number}: unknown command: {word}")
            continue
        try:
            handler(options, split_words(rest))
        except RcError as exc:
            warn(f"{path}:{number}: {exc}")


def _condition(name, sending):
    return {"s": sending, "r": not sending, "t": os.isatty(0)}.get(name[:1], False)


def _joined(lines):
    """Lines with backslash-newline continuations joined."""
    pending = ""
    for line in lines:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending
