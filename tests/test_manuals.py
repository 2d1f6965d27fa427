"""Every program's options, its --help and its manual page say the same thing.

Each program declares its command line once (cli.CommandLine); the parser,
`--help` and the usage error come from that table.  These tests check the
manual page against it: every option the program takes is in its SYNOPSIS
or OPTIONS, and the page names no option the program does not take.
"""

import re
import subprocess

import pytest
from conftest import REPO, program

from mailsuite.admin import command as mailsuite_cmd
from mailsuite.admin import queue_cmd
from mailsuite.imap import daemon as imapd
from mailsuite.lda import mail_local
from mailsuite.mail import main as mail
from mailsuite.mta import sendmail
from mailsuite.pop3 import daemon as pop3d
from mailsuite.webmail import serve as webmail

PROGRAMS = {
    "mail": (mail.COMMAND_LINE, "mail.1"),
    "mail.local": (mail_local.COMMAND_LINE, "mail.local.8"),
    "pop3d": (pop3d.COMMAND_LINE, "pop3d.8"),
    "imapd": (imapd.COMMAND_LINE, "imapd.8"),
    "mailq": (sendmail.MAILQ, "mailq.1"),
    "newaliases": (sendmail.NEWALIASES, "newaliases.8"),
    "webmail": (webmail.COMMAND_LINE, "webmail.8"),
}
PAGE_SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "EXIT STATUS", "SEE ALSO")
FORMAT_SECTIONS = ("NAME", "DESCRIPTION", "FILES", "SEE ALSO")


def option_tokens(text):
    """The options TEXT names: -x, --long, and each letter of a group such as [-EiNn]."""
    found = set()
    for group in re.findall(r"\[\s*-([A-Za-z]{2,})\s*\]", text):
        found |= {f"-{letter}" for letter in group}
    text = re.sub(r"\[\s*-[A-Za-z]{2,}\s*\]", " ", text)
    found |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[A-Za-z](?![A-Za-z]))", text))
    return found


def page_text(page):
    """A manual page as words: \\- is a dash, font changes and quotes vanish."""
    text = (REPO / "man" / page).read_text()
    return re.sub(r"\\f[BIRP]|\\&|\"", "", text).replace("\\-", "-")


def sections(page):
    parts = re.split(r"^\.SH ", page_text(page), flags=re.M)[1:]
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] for part in parts}


def declared(command_line):
    return {flag for option in command_line.options for flag in option.flags}


@pytest.mark.parametrize("name", PROGRAMS)
def test_help_is_the_declared_command_line(name):
    command_line, _ = PROGRAMS[name]
    done = subprocess.run([program(name), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == command_line.help()


@pytest.mark.parametrize("name", PROGRAMS)
def test_usage_names_every_option_and_no_other(name):
    command_line, _ = PROGRAMS[name]
    assert option_tokens(command_line.usage()) == declared(command_line)


@pytest.mark.parametrize("name", PROGRAMS)
def test_manual_page_documents_every_option_and_no_other(name):
    command_line, page = PROGRAMS[name]
    parts = sections(page)
    documented = option_tokens(parts["SYNOPSIS"] + parts.get("OPTIONS", ""))
    assert documented == declared(command_line) | {"--help"}, page


def test_sendmail_page_documents_every_letter_and_the_ignored_ones():
    parts = sections("sendmail.8")
    letters = {token[1] for token in re.findall(r"(?<![\w-])-[A-Za-z]", parts["SYNOPSIS"] + parts["OPTIONS"])}
    accepted = sendmail.WITH_VALUE | sendmail.FLAGS | {"b", "q"}
    assert letters == accepted
    ignored_sentence = parts["OPTIONS"][parts["OPTIONS"].index("accepted and ignored"):]
    ignored_sentence = ignored_sentence[:ignored_sentence.index("(")]
    assert {t[1] for t in re.findall(r"-[A-Za-z]", ignored_sentence)} == sendmail.IGNORED


def test_mailsuite_page_documents_its_commands_and_their_options():
    text = page_text("mailsuite.8")
    for name, (command_line, _) in mailsuite_cmd.SUBCOMMANDS.items():
        assert re.search(rf"^\.B[RI]* {name}\b", text, re.M), name
        assert declared(command_line) <= option_tokens(text), name
    for action in queue_cmd.ACTIONS:
        assert f"queue {action}" in text or f"B {action}" in text, action


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "man").iterdir()
                                        if not p.read_text().startswith(".so ")))
def test_every_page_has_the_sections_a_reader_looks_for(page):
    wanted = FORMAT_SECTIONS if page.endswith(".5") else PAGE_SECTIONS
    if page == "mailsuite.8":
        wanted = tuple(s for s in PAGE_SECTIONS if s != "OPTIONS") + ("COMMANDS", "OPTIONS")
    missing = [name for name in wanted if name not in sections(page)]
    assert not missing, f"{page} lacks {', '.join(missing)}"
