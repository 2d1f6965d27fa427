"""`mailsuite queue`: the operator's view of the mail queue.

    mailsuite queue list            what mailq shows
    mailsuite queue flush [ID...]   make deferred mail due now and run the queue
    mailsuite queue hold ID...      set messages aside (never delivered until released)
    mailsuite queue release ID...   put held messages back, due at once
    mailsuite queue delete ID...    remove messages without any notification
"""

import os
import sys

from . import config, log
from .cli import Fatal

ACTIONS = ("list", "flush", "hold", "release", "delete")


def add_arguments(parser):
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("ids", nargs="*", metavar="ID", help="queue ids (as mailq shows them)")


def cmd_queue(args):
    from .queue import Busy, NoPermission, Queue, QueueError
    cfg = config.load(args.config)
    queue = Queue(cfg)
    try:
        queue.check_access(write=args.action != "list")
    except NoPermission as exc:
        raise Fatal(os.EX_NOPERM, str(exc)) from None
    if args.action == "list":
        from .showq import show
        return show(cfg, sys.stdout)
    if args.action != "flush" and not args.ids:
        raise Fatal(os.EX_USAGE, f"queue {args.action} needs at least one queue id")
    status = 0
    for qid in [i.rstrip("*!") for i in args.ids]:
        try:
            if args.action == "flush":
                queue.flush(qid)
            else:
                getattr(queue, args.action)(qid)
        except Busy as exc:
            print(f"mailsuite: {exc}", file=sys.stderr)
            status = os.EX_TEMPFAIL
        except QueueError as exc:
            print(f"mailsuite: {exc}", file=sys.stderr)
            status = os.EX_NOINPUT
        else:
            print(f"{qid}: {args.action}")
    if args.action == "flush":
        from . import runnerlock
        from .runner import run_once
        if not args.ids:
            queue.flush()
        if not runnerlock.active(queue.dir):
            run_once(cfg, log.setup(cfg, "mailsuite"), ids=args.ids or None)
    return status
