"""`mailsuite queue`: the operator's view of the mail queue.

    mailsuite queue [list]          what mailq shows
    mailsuite queue show ID...      one message: envelope, each recipient's state, header
    mailsuite queue flush [ID...]   try deferred mail now (the running daemon's runner is woken)
    mailsuite queue hold ID...      set messages aside (never delivered until released)
    mailsuite queue release ID...   put held messages back, due at once
    mailsuite queue delete ID...    remove messages without any notification
"""

import os
import sys

from ..core import config, log
from ..core.cli import CommandLine, Fatal
from ..core.errors import ExitError

ACTIONS = ("list", "show", "flush", "hold", "release", "delete")

COMMAND_LINE = CommandLine("mailsuite queue", [], ["[list]", "show ID...", "flush [ID...]", "hold ID...",
                                                   "release ID...", "delete ID..."],
                           "The mail queue; IDs as mailq shows them.")


def cmd_queue(args):
    args.action, args.ids = (args.operands[0], args.operands[1:]) if args.operands else ("list", [])
    if args.action not in ACTIONS:
        raise COMMAND_LINE.error(f"no action {args.action!r}; one of {', '.join(ACTIONS)}")
    from ..mta.queue import Queue
    cfg = config.load(args.config)
    queue = Queue(cfg)
    queue.check_access(write=args.action not in ("list", "show"))
    if args.action == "list":
        from ..mta.showq import show
        return show(cfg, sys.stdout)
    if args.action != "flush" and not args.ids:
        raise Fatal(os.EX_USAGE, f"queue {args.action} needs at least one queue id")
    status = 0
    for qid in [i.rstrip("*!") for i in args.ids]:
        try:
            if args.action == "show":
                from ..mta.showq import detail
                detail(queue, qid, sys.stdout)
                continue
            getattr(queue, args.action)(qid)
        except ExitError as exc:                 # one message's problem: report it, go on with the others
            print(f"mailsuite: {exc}", file=sys.stderr)
            status = exc.status
        else:
            print(f"{qid}: {args.action}")
    if args.action == "flush":
        from ..mta.runner import flush, kick
        logger = log.setup(cfg, "mailsuite")
        if args.ids:
            kick(cfg, logger, ids=[i.rstrip("*!") for i in args.ids])
        else:
            flush(cfg, logger)
    return status
