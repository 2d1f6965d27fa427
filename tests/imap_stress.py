"""A seeded stress client for IMAP servers: many sessions, one model of the truth, every response checked.

N sessions (threads, one server process each) work on the same mailboxes
at once, choosing at random, from a seed, among SELECT/EXAMINE, FETCH,
STORE ±FLAGS and FLAGS (with keywords), SEARCH, COPY, MOVE, APPEND,
EXPUNGE, IDLE, NOOP, CHECK and STATUS, while mail.local delivers to INBOX.
Every message carries a token in its Subject, so a UID is tied to the
message it names.  Each session keeps what it was told (message numbers to
UIDs, flags, the announced FLAGS); a shared `World` keeps what is known to
be true, with the time each fact became true.  Checked on every response:

- EXISTS never shrinks a view; EXPUNGE numbers exist, and none arrives while
  a FETCH, STORE or SEARCH (not the UID forms) runs (RFC 3501 7.4.1);
- FETCH: a response for every number asked for (none skipped silently), the
  UID a number had stays its UID, UIDs ascend with numbers, no response
  names a UID the session was told is gone, a keyword is announced in
  `* FLAGS` before a FETCH shows it, and a UID always names the same message
  (token and size): UIDs are never reused;
- STORE answers carry the change made; SEARCH answers name existing numbers
  and, for the session's own keywords, exactly the messages that have them;
  SEARCH TEXT finds a message by its token;
- UIDVALIDITY never changes; UIDNEXT never goes back and is above every UID
  already seen; APPENDUID/COPYUID give UIDs above those;
- at NOOP, CHECK and IDLE (the points where a session must be brought up
  to date): every expunge and every new message (APPEND, COPY, MOVE,
  delivery) completed before the command began is known to the session,
  and every keyword change completed before it shows in its flags.

Flags are checked through ownership: session i alone adds and removes its
own keywords, so their value is known exactly, except around a STORE FLAGS
(replace) by another session, a failed STORE or a COPY, which are recorded
as events with their time span; a value whose last change overlaps the
moment of the check is not checked.  A check that Dovecot fails is a check
that is wrong: tests run this client against Dovecot too.

Usage: `run(target(box, "imapd"), seed=1, sessions=10, seconds=20)` returns
a `Report`; its violations and errors must be empty.  STRESS_TRACE=DIR
writes every session's exchanges to DIR, for a hunt.
"""

import bisect
import collections
import math
import os
import random
import re
import threading
import time
import traceback
from dataclasses import dataclass, field

from imap_wire import Protocol, ServerGone, Session

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
WEIGHTS = {"select": 3, "fetch": 14, "store": 16, "search": 8, "copy": 3, "move": 3, "append": 4, "expunge": 5,
           "idle": 2, "noop": 8, "check": 2, "status": 2}
MAILBOXES = ("INBOX", "stress/one", "stress/two")
TRACE = os.environ.get("STRESS_TRACE")  # a directory: each session's exchanges, for a hunt
CROWDED = 40            # a session that sees more messages than this prefers deleting them
UNAFFECTED = object()   # an event that leaves a keyword alone
ANCHOR = "anchor"       # the token of each mailbox's first message, which stays
EXPECTED_REFUSALS = {"EXPUNGEISSUED"}  # a COPY or MOVE of a message another session just expunged
SUBJECT = "BODY[HEADER.FIELDS (SUBJECT)]"
NEW_MESSAGE_ITEMS = "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"


@dataclass
class Target:
    """A server under test: how to start one session, and how to deliver a message to INBOX.

    A session is a process on pipes (ARGV, ENV), or, with CONNECT, what
    that callable returns (an imap_wire.SocketSession to a listener).
    """

    name: str
    argv: list
    env: dict
    deliver: object  # callable(bytes); raises on failure
    connect: object = None

    def session(self):
        return self.connect() if self.connect else Session(self.argv, self.env)


@dataclass
class Report:
    target: str
    seed: int
    sessions: int
    seconds: float = 0.0
    commands: collections.Counter = field(default_factory=collections.Counter)
    errors: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    deliveries: int = 0
    rss_kib: dict = field(default_factory=dict)  # pid -> (largest VmRSS seen, VmHWM at the end)
    total_kib: tuple = (0, 0)  # the largest sum over all sessions at once of (RSS, PSS) sampled
    latencies: list = field(default_factory=list)  # seconds per command, IDLE left out

    def latency_ms(self, quantile):
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(int(quantile * len(ordered)), len(ordered) - 1)] if ordered else 0.0

    @property
    def total(self):
        return sum(self.commands.values())

    def summary(self):
        rss = sorted(self.rss_kib.values())
        peak = max((hwm or seen for seen, hwm in rss), default=0) / 1024
        mean = sum(hwm or seen for seen, hwm in rss) / len(rss) / 1024 if rss else 0
        return (f"{self.target}: seed {self.seed}, {self.sessions} sessions, {self.total} commands in "
                f"{self.seconds:.1f}s ({self.total / self.seconds if self.seconds else 0:.0f}/s), "
                f"{self.deliveries} deliveries, {len(self.errors)} errors, {len(self.violations)} violations, "
                f"latency {self.latency_ms(0.5):.0f} ms median, {self.latency_ms(0.99):.0f} ms p99, "
                f"{self.latency_ms(1):.0f} ms max, RSS per session {mean:.1f} MiB mean, {peak:.1f} MiB peak")


# --- what is true ------------------------------------------------------------------


@dataclass
class Event:
    """A change to a message's keywords over [start, end]: values by keyword, `others` for the rest."""

    start: float
    end: float
    values: dict
    others: object = UNAFFECTED

    def affects(self, keyword):
        return keyword in self.values or self.others is not UNAFFECTED

    def value(self, keyword):
        return self.values.get(keyword, self.others)


class Staircase:
    """Lower bounds known from a time on (UIDNEXT floors): the largest known before a moment."""

    def __init__(self):
        self.times, self.values = [], []

    def add(self, when, value):
        if not self.values or value > self.values[-1]:
            self.times.append(when)
            self.values.append(value)

    def before(self, when):
        i = bisect.bisect_left(self.times, when)
        return self.values[i - 1] if i else 0


class World:
    """Facts about the mailboxes shared by every session, each with the time it became known."""

    def __init__(self, report, keywords):
        self.lock = threading.RLock()
        self.report = report
        self.keywords = keywords          # every session's own keywords
        self.tokens = {}                  # (mailbox, uid) -> token
        self.sizes = {}                   # (mailbox, uid) -> RFC822.SIZE
        self.expunged = {}                # (mailbox, uid) -> when it was first known gone
        self.created = {}                 # (mailbox, uid) -> when APPEND/COPY/MOVE reported it
        self.delivered = {}               # token -> when mail.local finished
        self.blind_expunge = {}           # mailbox -> last time a message of unknown UID or token went
        self.expunging = collections.defaultdict(list)     # mailbox -> start times of commands that may expunge
        self.doomed = set()               # (mailbox, uid) marked \\Deleted or being moved: it may go any time
        self.uidvalidity = {}
        self.floors = collections.defaultdict(Staircase)   # mailbox -> UIDNEXT lower bounds
        self.events = collections.defaultdict(list)        # (mailbox, uid) -> [Event]
        self.token_uid = {}               # (mailbox, token) -> uid

    def doom(self, mailbox, uids):
        """UIDS of MAILBOX (marked \\Deleted, or being moved) may go any time from now, by anyone's EXPUNGE.

        A server may expunge them for a session that never saw them, which
        then hears of nothing; so if one of them is a message nobody has
        named, the mailbox is blind from now on for messages that came before.
        """
        self.doomed.update((mailbox, uid) for uid in uids)
        if any(uid is None or (mailbox, uid) not in self.tokens for uid in uids):
            self.blind_expunge[mailbox] = max(self.blind_expunge.get(mailbox, 0), time.monotonic())

    def blind_since(self, mailbox):
        """Since when a message may have left MAILBOX unseen: a blind expunge, or an expunging command
        still running (the server may be done with it before its session has read the answer)."""
        return max([self.blind_expunge.get(mailbox, 0), *self.expunging[mailbox]])

    def violation(self, who, text):
        self.report.violations.append(f"{who}: {text}")

    def expected(self, mailbox, uid, keyword, since, until):
        """Whether the keyword is set on the message, for a view brought up to date over [since, until].

        None when it cannot be known: a change to it ran during that span,
        or its last change overlapped another one, or had an unknown result.
        """
        relevant = [e for e in self.events.get((mailbox, uid), ()) if e.start < until and e.affects(keyword)]
        if any(e.end > since for e in relevant):
            return None
        if not relevant:  # a delivered message starts without keywords; APPEND and COPY record an event,
            token = self.tokens.get((mailbox, uid))  # but only once their reply is in
            delivered = mailbox == "INBOX" and token and token.startswith("d")
            return False if delivered and self.token_uid.get((mailbox, token)) == uid else None
        last = max(relevant, key=lambda e: e.end)
        if any(e is not last and e.end > last.start for e in relevant):
            return None
        return last.value(keyword)

    def story(self, mailbox, uid, keyword, now):
        """The recorded changes to a keyword of a message, for a violation's text."""
        changes = [f"[{e.start - now:+.3f}s,{e.end - now:+.3f}s]={e.value(keyword)}"
                   for e in self.events.get((mailbox, uid), ()) if e.affects(keyword)]
        return f"changes (relative to the check): {changes or 'none'}"

    def learn_uid(self, who, mailbox, uid, token=None, size=None):
        """A UID seen in a response: it must always name the same message."""
        key = (mailbox, uid)
        self.floors[mailbox].add(time.monotonic(), uid + 1)
        if token is not None:
            known = self.tokens.setdefault(key, token)
            if known != token:
                self.violation(who, f"{mailbox} UID {uid} named message {known!r}, now {token!r}: a UID was reused"
                                    " or the wrong message was read")
            self.token_uid.setdefault((mailbox, token), uid)
        if size is not None:
            known = self.sizes.setdefault(key, size)
            if known != size:
                self.violation(who, f"{mailbox} UID {uid}: RFC822.SIZE {size}, earlier {known}")


# --- one session -------------------------------------------------------------------


class View:
    """What the server told one session about its selected mailbox."""

    def __init__(self, mailbox, readonly):
        self.mailbox = mailbox
        self.readonly = readonly
        self.uids = []           # message number - 1 -> UID (None until told)
        self.flags = {}          # uid -> set of flags (without \Recent) as last told
        self.gone = set()        # UIDs the session was told are expunged
        self.announced = set(SYSTEM_FLAGS)
        self.uidnext = 0

    def known(self):
        return [uid for uid in self.uids if uid is not None]


class Client(threading.Thread):
    """One session doing random work until the deadline, checking every reply."""

    def __init__(self, index, target, world, seed, deadline, weights):
        super().__init__(name=f"{target.name}-s{index}", daemon=True)
        self.index = index
        self.who = f"{target.name} seed {seed} session {index}"
        self.target = target
        self.world = world
        self.rng = random.Random(f"{seed}/{index}")
        self.deadline = deadline
        self.weights = weights
        self.own = (f"$S{index}a", f"$S{index}b")
        self.session = None
        self.view = None
        self.history = collections.deque(maxlen=12)
        self.counter = 0
        self.rss_seen = 0

    # -- plumbing --

    def run(self):
        report = self.world.report
        try:
            self.session = self.target.session()
            self.select(self.rng.choice(MAILBOXES))
            while time.monotonic() < self.deadline:
                operation = self.choose()
                getattr(self, "op_" + operation)()
        except (ServerGone, Protocol, OSError) as exc:
            report.errors.append(f"{self.who}: {type(exc).__name__}: {exc}; last commands: {list(self.history)}")
        except Exception:  # a bug of the client must fail the run, not vanish with its thread
            report.errors.append(f"{self.who}: the client failed: {traceback.format_exc()}")
        finally:
            if self.session is not None:
                hwm = _status_kib(self.session.pid, "VmHWM")
                self.session.close()
                with self.world.lock:
                    report.rss_kib[self.session.pid] = (self.rss_seen, hwm)

    def choose(self):
        names = [n for n in self.weights if self.weights[n]]
        weights = [self.weights[n] for n in names]
        if self.view is not None and len(self.view.uids) > CROWDED and "expunge" in names:
            weights[names.index("expunge")] *= 6
        return self.rng.choices(names, weights)[0]

    def command(self, kind, text, literal=None):
        """Run a command, absorb its responses into the view, check them; the Reply."""
        self.history.append(text if len(text) < 120 else text[:117] + "...")
        expunging = self.view.mailbox if self.view is not None and _may_expunge(text) else None
        if expunging:
            with self.world.lock:
                self.world.expunging[expunging].append(started := time.monotonic())
        try:
            reply = self.session.command(text, literal)
        finally:
            if expunging:
                with self.world.lock:
                    self.world.expunging[expunging].remove(started)
        if TRACE:
            with open(os.path.join(TRACE, f"{self.name}.log"), "ab") as f:
                f.write(b"C: %s [%.4f]\n" % (text.encode(), reply.started) + b"".join(b"S: " + r[:300] + b"\n" for r in reply.raw))
        with self.world.lock:
            self.world.report.commands[kind] += 1
            self.world.report.latencies.append(reply.ended - reply.started)
            self.absorb(reply, text)
            if reply.status != "OK" and reply.code not in EXPECTED_REFUSALS:
                self.world.report.errors.append(f"{self.who}: {text!r} -> {reply.status} [{reply.code}] "
                                                f"{reply.text}")
        return reply

    def violation(self, text):
        self.world.violation(self.who, f"{text}; last commands: {list(self.history)}")

    # -- understanding responses --

    def absorb(self, reply, text):
        verb = text.split()[0].upper()
        if verb == "UID":
            verb = "UID " + text.split()[1].upper()
        numbered = verb in ("FETCH", "STORE", "SEARCH")
        view = self.view
        for response in reply.untagged:
            kind = response[0]
            if kind == "BYE" and verb != "LOGOUT":
                self.violation(f"unexpected BYE: {response}")
            if view is None:
                continue
            if kind == "EXISTS":
                if response[1] < len(view.uids):
                    self.violation(f"EXISTS {response[1]} with {len(view.uids)} messages in view")
                view.uids.extend([None] * (response[1] - len(view.uids)))
            elif kind == "RECENT" and response[1] > len(view.uids):
                self.violation(f"RECENT {response[1]} > EXISTS {len(view.uids)}")
            elif kind == "EXPUNGE":
                self.expunged(response[1], numbered, verb)
            elif kind == "FETCH":
                self.fetched(response[1], response[2])
            elif kind == "FLAGS":
                view.announced = set(response[1])
            elif kind == "OK" and response[1]:
                self.code(response[1], response[2], reply)

    def expunged(self, number, numbered, verb):
        view = self.view
        if numbered:
            self.violation(f"EXPUNGE {number} during {verb} (RFC 3501 7.4.1)")
        if not 1 <= number <= len(view.uids):
            self.violation(f"EXPUNGE {number} with {len(view.uids)} messages in view")
            return
        uid = view.uids.pop(number - 1)
        now = time.monotonic()
        if uid is None or (view.mailbox, uid) not in self.world.tokens:  # gone, but which message was it?
            self.world.blind_expunge[view.mailbox] = max(self.world.blind_expunge.get(view.mailbox, 0), now)
        if uid is None:
            return
        view.gone.add(uid)
        view.flags.pop(uid, None)
        self.world.expunged.setdefault((view.mailbox, uid), now)

    def fetched(self, number, items):
        view = self.view
        if not 1 <= number <= len(view.uids):
            self.violation(f"FETCH for message {number} with {len(view.uids)} in view: {items}")
            return
        uid = items.get("UID")
        known = view.uids[number - 1]
        if uid is None:
            uid = known
        elif uid in view.gone:
            self.violation(f"FETCH {number} names UID {uid}, which the session was told is gone")
        elif known is None:
            lower = max((u for u in view.uids[:number - 1] if u is not None), default=0)
            higher = min((u for u in view.uids[number:] if u is not None), default=None)
            if uid <= lower or (higher is not None and uid >= higher):
                self.violation(f"UID {uid} for message {number} breaks the ascending order of the view")
            view.uids[number - 1] = uid
        elif known != uid:
            self.violation(f"message {number} was UID {known}, now the server says UID {uid}")
            return
        if uid is None:
            return
        token = _token(items.get(SUBJECT))
        self.world.learn_uid(self.who, view.mailbox, uid, token, items.get("RFC822.SIZE"))
        if "FLAGS" in items:
            flags = set(items["FLAGS"]) - {"\\Recent"}
            unannounced = flags - view.announced
            if unannounced:
                self.violation(f"FETCH FLAGS shows {sorted(unannounced)} before * FLAGS announced it")
            view.flags[uid] = flags

    def code(self, code, args, reply):
        view, world = self.view, self.world
        mailbox = view.mailbox
        if code == "UIDVALIDITY":
            known = world.uidvalidity.setdefault(mailbox, int(args))
            if known != int(args):
                self.violation(f"UIDVALIDITY of {mailbox} changed from {known} to {args}")
        elif code == "UIDNEXT":
            self.check_uidnext(mailbox, int(args), reply.started)
            view.uidnext = int(args)
        elif code == "COPYUID":  # MOVE's untagged OK
            self.copied(args, reply)

    def check_uidnext(self, mailbox, value, started):
        floor = self.world.floors[mailbox].before(started)
        if value < floor:
            self.violation(f"UIDNEXT {value} of {mailbox} below {floor}, known before the command began")
        self.world.floors[mailbox].add(time.monotonic(), value)

    # -- operations --

    def select(self, mailbox, readonly=False):
        self.view = View(mailbox, readonly)
        reply = self.command("select", f"{'EXAMINE' if readonly else 'SELECT'} {mailbox}")
        if not reply.ok:
            self.view = None
            return
        self.learn_new()

    def learn_new(self):
        """FETCH what the view does not know yet (UIDs, flags, tokens of new messages)."""
        view = self.view
        if view is None or None not in view.uids:
            return None
        first = view.uids.index(None) + 1
        return self.command("fetch", f"FETCH {first}:* {NEW_MESSAGE_ITEMS}")

    def op_select(self):
        self.select(self.rng.choice(MAILBOXES), readonly=self.rng.random() < 0.2)

    def some_numbers(self, at_most=4):
        count = len(self.view.uids)
        if not count:
            return []
        picks = self.rng.sample(range(1, count + 1), min(count, self.rng.randint(1, at_most)))
        return sorted(picks)

    def removable(self, numbers):
        """The numbers of messages this session may delete or move: known UIDs, no anchor."""
        view, tokens = self.view, self.world.tokens
        return [n for n in numbers if view.uids[n - 1] is not None
                and not (tokens.get((view.mailbox, view.uids[n - 1])) or ANCHOR).startswith(ANCHOR)]

    def op_fetch(self):
        view = self.view
        if view is None or not view.uids:
            return self.op_noop()
        items = self.rng.choice(["(UID FLAGS)", "(FLAGS)", NEW_MESSAGE_ITEMS, "(UID RFC822.SIZE ENVELOPE)",
                                 "(UID BODY.PEEK[])", "(UID BODYSTRUCTURE INTERNALDATE)", "(UID BODY.PEEK[TEXT])"])
        if self.rng.random() < 0.3:
            numbers, text = list(range(1, len(view.uids) + 1)), f"FETCH 1:* {items}"
        else:
            numbers = self.some_numbers()
            text = f"FETCH {','.join(map(str, numbers))} {items}"
        if self.rng.random() < 0.3 and all(view.uids[n - 1] for n in numbers):
            text = f"UID FETCH {','.join(str(view.uids[n - 1]) for n in numbers)} {items}"
            reply = self.command("fetch", text)
        else:
            before = list(view.uids)
            reply = self.command("fetch", text)
            answered = {r[1] for r in reply.untagged if r[0] == "FETCH"}
            missing = [n for n in numbers if n not in answered and n <= len(before)]
            if missing and reply.ok:
                self.violation(f"no FETCH response for messages {missing} of {len(before)}")
        self.check_bodies(reply)
        self.learn_new()

    def check_bodies(self, reply):
        """What a FETCH read is the message its UID names (stale offsets would show here)."""
        with self.world.lock:
            for response in reply.untagged:
                if response[0] != "FETCH":
                    continue
                items = response[2]
                uid = items.get("UID")
                known = self.world.tokens.get((self.view.mailbox, uid))
                if not known:
                    continue
                for name, marker in (("BODY[]", b"Subject: stress "), ("BODY[TEXT]", b"body of ")):
                    data = items.get(name)
                    if isinstance(data, bytes) and marker + known.encode() + b"\r\n" not in data:
                        self.violation(f"{name} of UID {uid} is not message {known!r}: {data[:120]!r}")

    def op_store(self):
        view = self.view
        if view is None or not view.uids or view.readonly:
            return self.op_noop()
        numbers = [n for n in self.some_numbers(3) if view.uids[n - 1] is not None]
        if not numbers:
            return self.op_noop()
        uids = [view.uids[n - 1] for n in numbers]
        mode = self.rng.choices(["+", "-", ""], [10, 8, 1])[0]
        keywords = self.rng.sample(self.own, self.rng.randint(0, 2))
        system = self.rng.sample(["\\Flagged", "\\Answered", "\\Seen", "\\Draft"], self.rng.randint(0, 1))
        if not keywords and not system:
            keywords = [self.rng.choice(self.own)]
        silent = ".SILENT" if self.rng.random() < 0.15 else ""
        flags = " ".join(system + keywords)
        by_uid = self.rng.random() < 0.4 and None not in uids
        if by_uid:
            text = f"UID STORE {','.join(map(str, uids))} {mode}FLAGS{silent} ({flags})"
        else:
            text = f"STORE {','.join(map(str, numbers))} {mode}FLAGS{silent} ({flags})"
        events = self.announce_store(view, uids, mode, set(keywords))
        reply = self.command("store", text)
        with self.world.lock:
            self.record_store(events, reply)
            if silent and reply.ok:
                self.assume(uids, mode, set(system) | set(keywords))
            elif reply.ok and reply.code != "EXPUNGEISSUED":
                self.check_store(numbers, uids, events, mode, set(system) | set(keywords), reply, by_uid)
        self.learn_new()

    def assume(self, uids, mode, flags):
        """A silent STORE that succeeded: the client knows what it did."""
        for uid in uids:
            told = self.view.flags.get(uid)
            if told is None:
                continue
            self.view.flags[uid] = told | flags if mode == "+" else told - flags if mode == "-" else set(flags)

    def announce_store(self, view, uids, mode, keywords):
        """The STORE's events, recorded before it is sent: while it runs, nobody can know its outcome."""
        if mode == "":
            values, others = {k: k in keywords for k in self.world.keywords}, False
        else:
            values, others = {k: mode == "+" for k in keywords}, UNAFFECTED
        started = time.monotonic()
        events = [Event(started, math.inf, values, others) for _ in uids]
        with self.world.lock:
            for uid, event in zip(uids, events):
                self.world.events[(view.mailbox, uid)].append(event)
        return events

    def record_store(self, events, reply):
        for event in events:
            event.end = reply.ended
            if not reply.ok:  # its outcome is unknown
                event.values = {k: None for k in event.values}
                event.others = UNAFFECTED if event.others is UNAFFECTED else None

    def check_store(self, numbers, uids, mine, mode, flags, reply, by_uid):
        """What a STORE answers shows its change to this session's own keywords.

        Only its own: another session may change any other flag at the same
        moment.  No FETCH at all is fine (Dovecot sends none when nothing
        changed), and so is an answer while another session replaced the
        flags, copied or appended the message.
        """
        shown = collections.defaultdict(list)  # ("uid", n) or ("seq", n) -> flags answered
        for response in reply.untagged:
            if response[0] == "FETCH" and "FLAGS" in response[2]:
                items = response[2]
                key = ("uid", items["UID"]) if "UID" in items else ("seq", response[1])
                shown[key].append(set(items["FLAGS"]) - {"\\Recent"})
        for number, uid in zip(numbers, uids):
            if uid is None or (self.view.mailbox, uid) in self.world.expunged:
                continue
            answers = shown.get(("uid", uid), []) + ([] if by_uid else shown.get(("seq", number), []))
            own_event = mine[uids.index(uid)]
            if not answers or any(e is not own_event and e.others is not UNAFFECTED and e.end > reply.started
                                  for e in self.world.events.get((self.view.mailbox, uid), ())):
                continue
            own = flags & set(self.own)
            if mode == "+":
                good = [a for a in answers if own <= a]
            elif mode == "-":
                good = [a for a in answers if not own & a]
            else:  # the replace took the others' keywords too, but they may have set theirs again since
                good = [a for a in answers if a & set(self.own) == own]
            if not good:
                self.violation(f"STORE {mode}FLAGS ({' '.join(sorted(flags))}) on UID {uid} answered {answers}")

    def op_search(self):
        view = self.view
        if view is None:
            return self.op_noop()
        choice = self.rng.randrange(5)
        uid_form = self.rng.random() < 0.5
        prefix = "UID SEARCH" if uid_form else "SEARCH"
        mine = self.rng.choice(self.own)
        if choice == 0:
            text = f"{prefix} KEYWORD {mine}"
        elif choice == 1:
            text = f"{prefix} UNKEYWORD {mine} NOT DELETED"
        elif choice == 2:
            candidates = [u for u in view.known() if (view.mailbox, u) in self.world.tokens]
            if not candidates:
                return self.op_noop()
            uid = self.rng.choice(candidates)
            text = f'{prefix} TEXT "{self.world.tokens[(view.mailbox, uid)]}"'
        elif choice == 3:
            text = f"{prefix} OR FLAGGED SEEN"
        else:
            text = f"{prefix} FROM stress@example.org SMALLER 100000"
        before, gone = list(view.uids), set(view.gone)
        reply = self.command("search", text)
        results = [n for r in reply.untagged if r[0] == "SEARCH" for n in r[1]]
        with self.world.lock:
            self.check_search(text, results, uid_form, before, gone, mine, reply)
        self.learn_new()

    def check_search(self, text, results, uid_form, before, gone, mine, reply):
        view = self.view
        if not reply.ok:
            return
        if uid_form:  # an EXPUNGE may come with a UID SEARCH, after its result
            bad = [u for u in results if u in gone]
            found = set(results)
        else:
            bad = [n for n in results if not 1 <= n <= len(before)]
            found = {before[n - 1] for n in results if 1 <= n <= len(before)}
        if bad:
            self.violation(f"{text} returned {bad}, not in the session's view")
        world = self.world
        if " KEYWORD " in text or "UNKEYWORD" in text:
            wanted = "UNKEYWORD" not in text
            for uid in before:
                if uid is None or uid not in view.uids or uid not in view.flags:
                    continue
                if (view.mailbox, uid) in world.expunged:
                    continue
                others = [e for e in world.events.get((view.mailbox, uid), ()) if e.others is not UNAFFECTED]
                if others or "\\Deleted" in view.flags[uid]:
                    continue  # a replace by another session: the view may lag behind the file
                if ((mine in view.flags[uid]) == wanted) != (uid in found):
                    self.violation(f"{text}: UID {uid} {'found' if uid in found else 'missed'}, its flags "
                                   f"as told: {sorted(view.flags[uid])}")
        if " TEXT " in text:
            token = text.split('"')[1]
            uid = world.token_uid.get((view.mailbox, token))
            if uid in before and (view.mailbox, uid) not in world.expunged and uid not in found:
                self.violation(f"{text} did not find UID {uid}")

    def transfer(self, move):
        view = self.view
        if view is None or not view.uids or (move and view.readonly):
            return self.op_noop()
        numbers = self.some_numbers(3)
        numbers = self.removable(numbers) if move else [n for n in numbers if view.uids[n - 1] is not None]
        if not numbers:
            return self.op_noop()
        target = self.rng.choice([m for m in MAILBOXES if m != view.mailbox])
        verb = "MOVE" if move else "COPY"
        uids = [view.uids[n - 1] for n in numbers]
        if self.rng.random() < 0.5:
            text = f"UID {verb} {','.join(map(str, uids))} {target}"
        else:
            text = f"{verb} {','.join(map(str, numbers))} {target}"
        source = view.mailbox
        if move:
            with self.world.lock:
                self.world.doom(source, uids)
        reply = self.command(verb.lower(), text)
        if reply.code == "COPYUID":
            with self.world.lock:
                self.copied(reply.code_args, reply, target, source)
        self.learn_new()

    def copied(self, args, reply, target=None, source=None):
        """COPYUID validity source-uids dest-uids: the copies are new UIDs of the same messages."""
        world = self.world
        if target is None:  # MOVE's untagged OK: the target is in the history
            match = re.search(r"MOVE \S+ (\S+)$", self.history[-1])
            target, source = match.group(1) if match else None, self.view.mailbox
        if target is None:
            return
        validity, sources, targets = args.split()
        sources, targets = _uid_list(sources), _uid_list(targets)
        if len(sources) != len(targets):
            self.violation(f"COPYUID {args}: the sets differ in size")
            return
        known = world.uidvalidity.setdefault(target, int(validity))
        if known != int(validity):
            self.violation(f"COPYUID gives UIDVALIDITY {validity} for {target}, known {known}")
        floor = world.floors[target].before(reply.started)
        for old, new in zip(sources, targets):
            if new < floor:
                self.violation(f"COPYUID gives UID {new} in {target}, below {floor} known before the command")
            if (target, new) in world.created or (target, new) in world.tokens:
                if world.tokens.get((target, new)) != world.tokens.get((source, old)):
                    self.violation(f"COPYUID gives UID {new} in {target}, already used")
            world.created.setdefault((target, new), reply.ended)
            world.learn_uid(self.who, target, new, world.tokens.get((source, old)), world.sizes.get((source, old)))
            values = {k: world.expected(source, old, k, reply.started, reply.ended) for k in world.keywords}
            world.events[(target, new)].append(Event(reply.started, reply.ended, values, None))

    def op_copy(self):
        self.transfer(move=False)

    def op_move(self):
        self.transfer(move=True)

    def op_append(self):
        mailbox = self.rng.choice(MAILBOXES)
        keywords = self.rng.sample(self.own, self.rng.randint(0, 2))
        system = self.rng.sample(["\\Seen", "\\Flagged"], self.rng.randint(0, 1))
        token = self.new_token("a")
        message = _message(token, self.rng.randint(0, 3)).replace(b"\n", b"\r\n")
        reply = self.command("append", f"APPEND {mailbox} ({' '.join(system + keywords)})", literal=message)
        if reply.ok and reply.code == "APPENDUID":
            validity, uid = map(int, reply.code_args.split())
            world = self.world
            with world.lock:
                known = world.uidvalidity.setdefault(mailbox, validity)
                if known != validity:
                    self.violation(f"APPENDUID gives UIDVALIDITY {validity} for {mailbox}, known {known}")
                floor = world.floors[mailbox].before(reply.started)
                if uid < floor:
                    self.violation(f"APPENDUID {uid} in {mailbox} below {floor}, known before the APPEND")
                if (mailbox, uid) in world.tokens and world.tokens[(mailbox, uid)] != token:
                    self.violation(f"APPENDUID {uid} in {mailbox} was message {world.tokens[(mailbox, uid)]!r}")
                world.created.setdefault((mailbox, uid), reply.ended)
                world.learn_uid(self.who, mailbox, uid, token)
                values = {k: k in keywords for k in world.keywords}
                world.events[(mailbox, uid)].append(Event(reply.started, reply.ended, values, False))
        self.learn_new()

    def new_token(self, origin):
        self.counter += 1
        return f"{origin}{self.index}x{self.counter}"

    def op_expunge(self):
        view = self.view
        if view is None or not view.uids or view.readonly:
            return self.op_noop()
        numbers = self.removable(self.some_numbers(6 if len(view.uids) > CROWDED else 2))
        if not numbers:
            return self.op_noop()
        uids = [view.uids[n - 1] for n in numbers]
        with self.world.lock:
            self.world.doom(view.mailbox, uids)
        if self.rng.random() < 0.5 and None not in uids:
            reply = self.command("store", f"UID STORE {','.join(map(str, uids))} +FLAGS.SILENT (\\Deleted)")
        else:
            reply = self.command("store", f"STORE {','.join(map(str, numbers))} +FLAGS.SILENT (\\Deleted)")
        if reply.ok:
            with self.world.lock:
                self.assume(uids, "+", {"\\Deleted"})
        known = [view.uids[n - 1] for n in self.removable(range(1, len(view.uids) + 1))]
        if self.rng.random() < 0.3 and known:
            self.command("expunge", f"UID EXPUNGE {','.join(map(str, self.rng.sample(known, min(3, len(known)))))}")
        else:
            self.command("expunge", "EXPUNGE")
        self.learn_new()

    def op_noop(self):
        self.synced("NOOP")

    def op_check(self):
        if self.view is None:
            return self.synced("NOOP")
        self.synced("CHECK")

    def op_idle(self):
        if self.view is None:
            return self.synced("NOOP")
        self.history.append("IDLE")
        reply = self.session.idle(self.rng.uniform(0.1, 0.4))
        with self.world.lock:
            self.world.report.commands["idle"] += 1
            self.absorb(reply, "IDLE")
        self.after_sync(reply, "IDLE")

    def op_status(self):
        mailbox = self.rng.choice(MAILBOXES)
        if self.view is not None and mailbox == self.view.mailbox:
            return self.synced("NOOP")
        reply = self.command("status", f"STATUS {mailbox} (MESSAGES UIDNEXT UIDVALIDITY)")
        with self.world.lock:
            for response in reply.untagged:
                if response[0] == "STATUS":
                    values = response[2]
                    known = self.world.uidvalidity.setdefault(mailbox, values["UIDVALIDITY"])
                    if known != values["UIDVALIDITY"]:
                        self.violation(f"STATUS UIDVALIDITY {values['UIDVALIDITY']} of {mailbox}, known {known}")
                    self.check_uidnext(mailbox, values["UIDNEXT"], reply.started)

    def synced(self, verb):
        reply = self.command(verb.lower(), verb)
        self.after_sync(reply, verb)

    def after_sync(self, reply, verb):
        """At NOOP, CHECK and IDLE the session must know of everything completed before it began."""
        fetch = self.learn_new()
        view = self.view
        if view is None or not reply.ok:
            return
        since = reply.started
        until = fetch.ended if fetch is not None else reply.ended
        world = self.world
        with world.lock:
            in_view = set(view.known())
            for (mailbox, uid), when in world.expunged.items():
                if mailbox == view.mailbox and when < since and uid in in_view:
                    self.violation(f"UID {uid} was expunged before {verb} began, still in the view")
            blind = world.blind_since(view.mailbox)
            for (mailbox, uid), when in world.created.items():
                gone = world.expunged.get((mailbox, uid))
                if mailbox == view.mailbox and blind < when < since and uid not in in_view \
                        and uid not in view.gone and (gone is None or gone > until) \
                        and (mailbox, uid) not in world.doomed:  # whose expunge may not be answered yet
                    self.violation(f"{mailbox} UID {uid}, made by APPEND/COPY/MOVE {since - when:.3f}s before "
                                   f"{verb} began, is not in the view")
            if view.mailbox == "INBOX":
                self.check_deliveries(since, until, in_view)
            sample = list(self.own) + self.rng.sample(world.keywords, min(4, len(world.keywords)))
            for uid in in_view:
                told = view.flags.get(uid)
                if told is None or world.expunged.get((view.mailbox, uid), until + 1) <= until:
                    continue
                for keyword in sample:
                    expected = world.expected(view.mailbox, uid, keyword, since, until)
                    if expected is not None and (keyword in told) != expected:
                        self.violation(f"{view.mailbox} UID {uid}: keyword {keyword} "
                                       f"{'missing' if expected else 'still shown'} after {verb}; flags as told: "
                                       f"{sorted(told)}; {world.story(view.mailbox, uid, keyword, since)}")

    def check_deliveries(self, since, until, in_view):
        world, view = self.world, self.view
        tokens = {world.tokens.get((view.mailbox, uid)) for uid in in_view}
        blind = world.blind_since(view.mailbox)
        for token, when in world.delivered.items():
            if when >= since or token in tokens:
                continue
            uid = world.token_uid.get((view.mailbox, token))
            if uid is None:
                if blind <= when:  # nobody can have removed a message nobody has seen
                    self.violation(f"delivered message {token!r} (before the command began) is not in the view")
                continue
            gone = world.expunged.get((view.mailbox, uid))
            if uid not in view.gone and (gone is None or gone > until) and blind <= when \
                    and (view.mailbox, uid) not in world.doomed:
                self.violation(f"delivered message {token!r}, UID {uid}, is not in the view")


# --- helpers -------------------------------------------------------------------------


def _may_expunge(text):
    words = text.upper().split()
    verb = " ".join(words[:2]) if words[:1] == ["UID"] else words[0]
    return verb in ("EXPUNGE", "CLOSE", "MOVE", "UID MOVE", "UID EXPUNGE")


def _token(value):
    if not isinstance(value, bytes):
        return None
    match = re.search(rb"Subject: stress (\S+)", value)
    return match.group(1).decode() if match else None


def _uid_list(text):
    out = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        low, high = int(low), int(high or low)
        out.extend(range(min(low, high), max(low, high) + 1))
    return out


def _message(token, paragraphs):
    body = b"".join(b"Paragraph %d of %s: the quick brown fox jumps over the lazy dog.\n" % (i, token.encode())
                    for i in range(paragraphs))
    return (b"From: Stress <stress@example.org>\nTo: alice@localhost\nSubject: stress " + token.encode() +
            b"\nMessage-ID: <" + token.encode() + b"@stress.example>\nMIME-Version: 1.0\n"
            b"Content-Type: text/plain\n\nbody of " + token.encode() + b"\n" + body)


def _status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- a run ---------------------------------------------------------------------------


def target(box, server):
    """The Target for "imapd" or "dovecot" on a sandbox both may use (imap_support.shared_sandbox)."""
    from imap_support import DOVECOT_IMAP, RUN_AS, Dovecot, deliver, imapd_command

    def to_inbox(message):
        deliver(box, "alice", message, as_user=RUN_AS)

    if server == "dovecot":
        dovecot = Dovecot(box, run_as=RUN_AS, concurrent=True)
        return Target("dovecot", [DOVECOT_IMAP, "-c", str(dovecot.conf)], dovecot.env, to_inbox)
    return Target("imapd", imapd_command(box, as_user=RUN_AS), box.env, to_inbox)


def run(target, *, seed, sessions, seconds, exclude=(), deliver_every=0.3):
    """Run the stress on one server; a Report (violations must be empty)."""
    unknown = set(exclude) - set(WEIGHTS)
    if unknown:
        raise ValueError(f"no such operations: {sorted(unknown)}")
    report = Report(target.name, seed, sessions)
    weights = {name: weight for name, weight in WEIGHTS.items() if name not in exclude}
    keywords = [f"$S{i}{x}" for i in range(sessions) for x in "ab"]
    world = World(report, keywords)
    setup = target.session()
    for mailbox in MAILBOXES:
        if mailbox != "INBOX":
            setup.command(f"CREATE {mailbox}")
        # An anchor no session removes: the mailboxes are never empty, because our store
        # forgets UIDVALIDITY and UIDNEXT when a mailbox is emptied and then reuses UIDs
        # (issue 11, item 14); the store's own tests cover that case.
        setup.command(f"APPEND {mailbox} ()", literal=_message(ANCHOR + mailbox.replace("/", "-"), 0))
    setup.close()
    started = time.monotonic()
    deadline = started + seconds
    clients = [Client(i, target, world, seed, deadline, weights) for i in range(sessions)]
    stop = threading.Event()
    delivery = threading.Thread(target=_deliver, args=(target, world, seed, stop, deliver_every), daemon=True)
    sampler = threading.Thread(target=_sample_rss, args=(clients, stop, report), daemon=True)
    for thread in (*clients, delivery, sampler):
        thread.start()
    for client in clients:
        client.join(seconds + 300)
        if client.is_alive():
            report.errors.append(f"{client.who}: still running long after the deadline")
    stop.set()
    delivery.join(120)
    sampler.join(10)
    report.seconds = time.monotonic() - started
    final_check(target, world)
    return report


def final_check(target, world):
    """When every session has ended, a new one must find exactly what is true.

    Every keyword as its owner left it (a lost update shows here), no
    expunged UID, every message APPEND, COPY or MOVE made that nobody
    expunged, each UID still naming its message.
    """
    who = f"{target.name} seed {world.report.seed} final check"
    session = target.session()
    try:
        for mailbox in MAILBOXES:
            reply = session.command(f"EXAMINE {mailbox}")
            exists = max([r[1] for r in reply.untagged if r[0] == "EXISTS"], default=0)
            reply = session.command(f"FETCH 1:* {NEW_MESSAGE_ITEMS}") if exists else reply
            now = time.monotonic()
            present = set()
            with world.lock:
                for response in reply.untagged:
                    if response[0] != "FETCH":
                        continue
                    items = response[2]
                    uid = items["UID"]
                    present.add(uid)
                    world.learn_uid(who, mailbox, uid, _token(items.get(SUBJECT)), items.get("RFC822.SIZE"))
                    if (mailbox, uid) in world.expunged:
                        world.violation(who, f"{mailbox} UID {uid} was expunged, yet is there")
                    flags = set(items["FLAGS"])
                    for keyword in world.keywords:
                        expected = world.expected(mailbox, uid, keyword, now, now)
                        if expected is not None and (keyword in flags) != expected:
                            world.violation(who, f"{mailbox} UID {uid}: keyword {keyword} "
                                                 f"{'lost' if expected else 'still set'}; flags {sorted(flags)}")
                blind = world.blind_since(mailbox)
                for (where, uid), when in world.created.items():
                    if where == mailbox and (where, uid) not in world.expunged and uid not in present \
                            and when > blind:
                        world.violation(who, f"{mailbox} UID {uid} (APPEND/COPY/MOVE) is missing")
    finally:
        session.close()


def _deliver(target, world, seed, stop, every):
    rng = random.Random(f"{seed}/deliveries")
    n = 0
    while not stop.wait(rng.uniform(0, 2 * every)):
        n += 1
        token = f"d{n}"
        try:
            target.deliver(_message(token, rng.randint(0, 4)))
        except Exception as exc:  # a failed delivery is an error of the run, not of the model
            with world.lock:
                world.report.errors.append(f"{target.name} seed {seed}: delivery {token} failed: {exc}")
            continue
        with world.lock:
            world.delivered[token] = time.monotonic()
            world.report.deliveries += 1


def _sample_rss(clients, stop, report):
    while not stop.wait(0.5):
        rss_sum = pss_sum = 0
        for client in clients:
            if client.session is not None and client.session.pid:
                client.rss_seen = max(client.rss_seen, _status_kib(client.session.pid, "VmRSS"))
                rss, pss = memory_kib(client.session.pid)
                rss_sum, pss_sum = rss_sum + rss, pss_sum + pss
        report.total_kib = max(report.total_kib, (rss_sum, pss_sum))


def memory_kib(pid):
    """(RSS, PSS) of a process in KiB, from smaps_rollup; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss
