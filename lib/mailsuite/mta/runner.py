"""The queue runner: pickup, scheduling, and a bounded pool of delivery workers.

`run_once()` is `sendmail -q` when no daemon runs: pick up the maildrop,
then one attempt for every message that is due (or only the ones asked
for), and return when the workers are done.  `run_forever()` is the
daemon's runner: pyinotify wakes it when a drop file or a new queue file
appears or someone calls `runnerlock.wake()`, a timer rescans
deferred/ for retries, and it never runs more than `queue.max_workers`
workers at once.  Each worker is a forked process handling one message
(worker.py), so a crash or a SIGKILL costs one attempt of one message:
its file stays in active/ and `Queue.recover()` takes it back, deferred
like a failed attempt, held after a few crashes.  Nothing that goes wrong
with one message or one drop file stops the runner.

While a runner lives it holds the runner lock (runnerlock.py), which tells
`sendmail` that mail dropped now will be picked up without its help.
"""

import os
import signal
import time

import pyinotify

from ..core import children
from . import runnerlock
from .pickup import pickup_all
from .queue import Queue, QueueError
from .worker import deliver_message

BUSY_POLL = 0.5                 # a backstop only: SIGCHLD wakes the runner when a worker ends
MIN_SLEEP = 0.05
ERROR_PAUSE = 5                 # after an unexpected error, the next full scan comes this soon


class WorkerPool:
    """Forked delivery workers, one message each, at most `size` at once."""

    def __init__(self, cfg, queue, logger, size=None):
        self.cfg, self.queue, self.logger = cfg, queue, logger
        self.size = max(1, size or cfg.queue.max_workers)
        self.running = {}                       # pid -> queue id

    def busy(self, qid):
        return qid in self.running.values()

    def full(self):
        return len(self.running) >= self.size

    def start(self, qid):
        """Fork a worker for QID, first waiting for a free slot."""
        while self.full():
            self.reap(block=True)
        pid = os.fork()
        if pid == 0:
            children.run_child(lambda: deliver_message(self.cfg, self.queue, qid, self.logger), self.logger,
                               f"{qid}: delivery worker")
        self.running[pid] = qid

    def reap(self, block=False):
        """Forget the workers that ended; a message whose worker failed goes back to the queue."""
        if not self.running:
            return
        ended = children.reap(block)
        if ended is None:
            self.running.clear()
            return
        for pid, status in ended:
            qid = self.running.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            if qid and code != 0:
                how = f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
                self.logger.warning("%s: delivery worker %d %s", qid, pid, how)
                recover(self.queue, self.logger, {qid: f"delivery worker {how}"})

    def wait_all(self):
        while self.running:
            self.reap(block=True)


def run_once(cfg, logger, *, ids=None):
    """One queue run; IDS forces an attempt for just those messages, due or not.

    Mail the run itself queues (bounces, and their bounces) gets its first
    attempt in the same run, so `sendmail -q` without a daemon leaves no
    notification behind."""
    queue = Queue(cfg)
    queue.ensure_dirs()
    recover(queue, logger)
    pickup_all(cfg, queue, logger)
    pool = WorkerPool(cfg, queue, logger)
    seen = {qid for _state, qid in queue.ids(("incoming",))}
    todo = queue.due() if ids is None else list(ids)
    for _generation in range(3):                # the mail, its bounces, double bounces
        for qid in todo:
            pool.start(qid)
        pool.wait_all()
        todo = [qid for _state, qid in queue.ids(("incoming",)) if qid not in seen]
        seen.update(todo)
    return 0


def flush(cfg, logger, ids=None):
    """`sendmail -q[I|R|S]`: every queued message (or those of IDS) is tried now, due or not."""
    queue = Queue(cfg)
    for qid in [None] if ids is None else ids:
        try:
            queue.flush(qid)
        except QueueError:              # being delivered, or gone meanwhile: nothing to hurry
            continue
    return kick(cfg, logger, ids)


def kick(cfg, logger, ids=None):
    """Have the due mail (or IDS) tried now: a running daemon's runner is woken to do it,
    else this process runs the queue itself and returns when the attempts are done."""
    queue = Queue(cfg)
    if runnerlock.active(queue.dir):
        runnerlock.wake(queue.dir)
        return 0
    return run_once(cfg, logger, ids=ids)


def run_forever(cfg, logger, *, interval=None):
    """The daemon's runner; returns after SIGTERM once its workers have finished."""
    interval = interval or cfg.queue.run_interval
    queue = Queue(cfg)
    queue.ensure_dirs()
    lock = runnerlock.hold(queue.dir)
    stopping = []
    waiting = []

    def stop(_signum, _frame):
        stopping.append(True)
        if waiting:                      # blocked in poll(): interrupt it
            raise _Stop()

    def worker_done(_signum, _frame):
        if waiting:                      # a slot is free: start the next message now
            raise _Wake()

    signal.signal(signal.SIGCHLD, worker_done)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # routing rereads aliases for every message

    watches = pyinotify.WatchManager()
    mask = pyinotify.IN_MOVED_TO | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_CREATE
    for directory in (cfg.mailsuite.maildrop_dir, os.path.join(queue.dir, "incoming"), queue.dir):
        if os.path.isdir(directory):              # the queue itself for runnerlock.wake()
            watches.add_watch(directory, mask, quiet=True)
    notifier = pyinotify.Notifier(watches, default_proc_fun=lambda _event: None, timeout=0)
    pool = WorkerPool(cfg, queue, logger)
    logger.info("queue runner started (%d workers, scan every %ds)", pool.size, interval)
    next_scan = 0.0
    try:
        while not stopping:
            try:
                if time.time() >= next_scan:
                    next_scan = time.time() + interval
                    recover(queue, logger)
                _dispatch(cfg, queue, pool, logger)
            except Exception:                   # noqa: BLE001 - the runner outlives any one problem
                logger.exception("queue runner: unexpected error; going on")
                next_scan = min(next_scan, time.time() + ERROR_PAUSE)
            try:
                waiting.append(True)
                if stopping:
                    break
                # woken by a new file, a free worker slot, the next retry or the next scan
                ready = notifier.check_events(timeout=int(_sleep_time(queue, pool, next_scan) * 1000))
            except _Stop:
                break
            except _Wake:
                ready = False
            finally:
                waiting.clear()
            if ready:
                notifier.read_events()
                notifier.process_events()
    finally:
        pool.wait_all()
        notifier.stop()
        os.close(lock)
        logger.info("queue runner stopped")


def recover(queue, logger, reasons=None):
    """Take back the messages of dead workers and clean what dead writers left in tmp/."""
    for qid, state in queue.recover(reasons).items():
        if state == "corrupt":
            logger.error("%s: damaged queue file; moved to the corrupt directory", qid)
        elif state == "hold":
            logger.warning("%s: held: its delivery worker crashed %d times", qid,
                           queue.cfg.queue.hold_after_crashes)
        else:
            logger.info("%s: taken back from a dead delivery worker; %s", qid, state)
    removed = queue.clean_tmp()
    if removed:
        logger.info("queue: removed %d file(s) left in tmp/ by writers that died", len(removed))


def _dispatch(cfg, queue, pool, logger):
    """Reap finished workers, take in the maildrop, start a worker for each due message."""
    pool.reap()
    pickup_all(cfg, queue, logger)
    for qid in queue.due():
        if pool.full():
            break
        if not pool.busy(qid):
            pool.start(qid)


class _Stop(Exception):
    """SIGTERM while the runner sleeps."""


class _Wake(Exception):
    """A worker finished while the runner slept."""


def _sleep_time(queue, pool, next_scan):
    """Seconds until the runner has something to do, if no file arrives first."""
    if pool.full():
        return BUSY_POLL
    wake_at = next_scan
    due = queue.next_due()
    if due is not None:
        wake_at = min(wake_at, due)
    wait = min(max(MIN_SLEEP, wake_at - time.time()), 60.0)
    return min(wait, BUSY_POLL) if pool.running else wait
