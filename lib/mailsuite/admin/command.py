"""mailsuite — the operator's umbrella command.

    mailsuite init  [--dir DIR] [--base-port N]   build a sandbox
    mailsuite up    [--dir DIR] [--base-port N]   run the sandbox's daemons in the foreground
    mailsuite check [-C FILE]       validate the configuration and permissions
    mailsuite trace [FILE|-] [--json]             the hops of a message, from its Received: lines

Subcommands are a table (`SUBCOMMANDS`): a name, its command line
(cli.CommandLine) and a function `(args) -> status` of the parsed options
(`args.config`, `args.dir`...) and operands (`args.operands`).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from ..core import config, hostport
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal, Option
from . import checks, queue_cmd, sandbox

# The sandbox's daemons, in start order: program, arguments, what it
# serves, and the config section whose `listen` addresses it binds.
DAEMONS = (
    ("sendmail", ["-bD"], "SMTP", "smtp"),
    ("pop3d", ["-d"], "POP3", "pop3"),
    ("imapd", ["-d"], "IMAP", "imap"),
    ("webmail", [], "HTTP", "webmail"),
)


def cmd_init(args):
    try:
        conf = sandbox.init(args.dir, base_port=args.base_port)
    except sandbox.SandboxExists as exc:
        raise Fatal(os.EX_CANTCREAT, str(exc)) from None
    print(f"sandbox ready: {conf}")
    return 0


def _program(name):
    """A sibling program of this one (same bin directory), else one on PATH."""
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    candidate = os.path.join(here, name)
    return candidate if os.access(candidate, os.X_OK) else shutil.which(name)


def _taken_ports(cfg, conf):
    """One line for each address a daemon of the sandbox could not listen on, naming the key to change."""
    problems = []
    for _, _, _, section in DAEMONS:
        for address in getattr(cfg, section).listen:
            exc = checks.bind_error(*hostport.listen_address(address, key=f"[{section}] listen"))
            if exc:
                problems.append(f"cannot listen on {address} ({exc.strerror}): change [{section}] listen "
                                f"in {conf}, or run `mailsuite up --base-port N` (ports N+25, N+110, N+143, "
                                f"N+80)")
    return problems


def _add_webmail(conf):
    """A sandbox made before the webmail existed gets its [webmail] section, on the ports it already uses."""
    cfg = config.load(conf, required=True)
    with open(conf, encoding="utf-8") as f:
        if any(line.strip() == "[webmail]" for line in f):
            return
    ports = {section: hostport.parse(getattr(cfg, section).listen[0])[1] for section in ("smtp", "pop3", "imap")}
    ports["webmail"] = sandbox.ports_for()["webmail"]
    sandbox.set_ports(conf, ports)


def cmd_up(args):
    directory = os.path.abspath(args.dir)
    conf = os.path.join(directory, "mailsuite.conf")
    if not os.path.exists(conf):
        sandbox.init(directory, base_port=args.base_port)
    elif args.base_port is not None:
        sandbox.set_ports(conf, sandbox.ports_for(args.base_port))
    else:
        _add_webmail(conf)
    cfg = config.load(conf, required=True)
    problems = _taken_ports(cfg, conf)
    if problems:
        for problem in problems[:-1]:
            print(f"mailsuite: {problem}", file=sys.stderr)
        raise Fatal(os.EX_UNAVAILABLE, problems[-1])
    children = []
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    lines = []
    for name, extra, label, section in DAEMONS:
        program = _program(name)
        if program is None:
            continue
        proc = subprocess.Popen([program, "-C", conf, *extra])
        children.append((name, proc))
        lines.append(f"  {label:7} {', '.join(getattr(cfg, section).listen)}  ({name}, pid {proc.pid})")
    failed = _wait_listening(cfg, children)
    if failed:
        status = _stop(children)
        raise Fatal(status or os.EX_UNAVAILABLE, f"{failed} did not start; see {cfg.mailsuite.log_file}")
    print(f"mailsuite sandbox in {directory}")
    print("\n".join(lines))
    print(f"  spools  {directory}/spool/   users alice, bob (password = user name)")
    print(f"  logs    {cfg.mailsuite.log_file}")
    print(f"  send    mail -C {conf} -u bob -s hello alice@localhost")
    print(f"  read    mail -C {conf} -u alice")
    print(f"          mutt -F {directory}/muttrc     fetchmail -f {directory}/fetchmailrc")
    if any(name == "webmail" for name, _ in children):
        print(f"  webmail http://{cfg.webmail.listen[0]}/   (alice or bob, password = user name)")
    if not children:
        print("no daemons are installed yet; the welcome messages are in the spools.")
        return 0
    print("Ctrl-C stops everything.")
    sys.stdout.flush()
    status = 0
    try:
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"mailsuite: {name} exited with status {proc.returncode}", file=sys.stderr)
                    stopping.append(None)
                    status = proc.returncode or os.EX_SOFTWARE
            time.sleep(0.2)
    finally:
        _stop(children)
    return status


def _wait_listening(cfg, children, timeout=30):
    """Wait until every daemon accepts connections, so the banner never announces a port not yet open.

    Returns the name of a daemon that exited or never listened, else None.
    """
    import socket
    deadline = time.monotonic() + timeout
    for name, proc in children:
        section = next(s for n, _, _, s in DAEMONS if n == name)
        for address in getattr(cfg, section).listen:
            host, port = hostport.connect_address(address)
            while True:
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        return name
                    time.sleep(0.05)
    return None


def _stop(children):
    """SIGTERM every daemon and wait for it; the first non-zero exit status, if any."""
    for _, proc in children:
        if proc.poll() is None:
            proc.terminate()
    for _, proc in children:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return next((proc.returncode for _, proc in children if proc.returncode > 0), 0)


def cmd_check(args):
    """One line per problem (see checks.py); exit 78 when there is any."""
    cfg = config.load(args.config)
    found = 0
    for problem in checks.problems(cfg):
        print(f"mailsuite check: {problem}")
        found += 1
    if not found:
        print(f"{cfg.path}: ok")
    return os.EX_CONFIG if found else 0


def cmd_trace(args):
    from ..trace import hops as trace
    from ..trace import render as trace_render
    if len(args.operands) > 1:
        raise TRACE.error(f"one message at a time, not {len(args.operands)}")
    name = args.operands[0] if args.operands else "-"
    try:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as f:
                data = f.read(8 << 20)           # a header is never this long; the body is not read
    except OSError as exc:
        raise Fatal(os.EX_NOINPUT, f"{name}: {exc.strerror}") from None
    result = trace.trace_message(data)
    if not result.hops and not result.date:
        raise Fatal(os.EX_DATAERR, f"{name}: no Received: or Date: header: is this a message?")
    sys.stdout.write(trace_render.as_json(result) if args.json else trace_render.text(result))
    return 0


def _sandbox_command(name, summary):
    return CommandLine(f"mailsuite {name}", [
        Option(("--dir",), "dir", "sandbox directory (default ./sandbox)", metavar="DIR"),
        Option(("--base-port",), "base_port", "put SMTP, POP3, IMAP and the webmail on N+25, N+110, N+143, "
               "N+80 (default 2525, 1100, 1430, 8080)", metavar="N"),
    ], ["[--dir DIR] [--base-port N]"], summary)


TRACE = CommandLine("mailsuite trace", [
    Option(("--json",), "json", "the same as JSON, for programs"),
], ["[--json] [FILE|-]"], "Show the hops a message took, from its Received: lines: FILE is a message "
    "(or its header, or an mbox's first message); - or none reads standard input.")

SUBCOMMANDS = {
    "init": (_sandbox_command("init", "Build a sandbox installation in DIR."), cmd_init),
    "up": (_sandbox_command("up", "Run the sandbox's daemons in the foreground."), cmd_up),
    "check": (CommandLine("mailsuite check", [], [""], "Validate the configuration, the spool, "
                          "the queue, the maildrop and the ports: one line per problem."), cmd_check),
    "trace": (TRACE, cmd_trace),
    "queue": (queue_cmd.COMMAND_LINE, queue_cmd.cmd_queue),
}

COMMAND_LINE = CommandLine("mailsuite", [CONFIG_OPTION],
                           [f"[-C FILE] {name} ..." for name in SUBCOMMANDS],
                           "The mailsuite operator's command; `mailsuite COMMAND --help` tells more.")


def main(argv):
    options, operands = COMMAND_LINE.parse(argv[1:])
    if options.get("help"):
        sys.stdout.write(COMMAND_LINE.help())
        return 0
    if not operands:
        raise COMMAND_LINE.error("a command is needed")
    if operands[0] not in SUBCOMMANDS:
        raise COMMAND_LINE.error(f"no command {operands[0]!r}")
    command_line, run = SUBCOMMANDS[operands[0]]
    values, rest = command_line.parse(operands[1:])
    if values.get("help"):
        sys.stdout.write(command_line.help())
        return 0
    if rest and run not in (queue_cmd.cmd_queue, cmd_trace):
        raise command_line.error(f"unexpected argument {rest[0]!r}")
    args = SimpleNamespace(config=options.get("config"), dir=values.get("dir", "sandbox"), operands=rest,
                           json=bool(values.get("json")))
    try:
        args.base_port = int(values["base_port"]) if "base_port" in values else None
    except ValueError:
        raise command_line.error(f"--base-port: not a port number: {values['base_port']!r}") from None
    return run(args)
