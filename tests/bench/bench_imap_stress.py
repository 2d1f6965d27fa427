"""imapd's sessions under load, against Dovecot's, same run: logins, idle sessions, the stress client.

1. LOGIN: the time from LOGIN to its tagged OK, through `imapd -d` (a
   forked child of the listener) and through an inetd-style process on
   pipes, on an idle machine and on a loaded one (two busy processes, one
   per core); the scrypt check alone in the same run; and CONCURRENT (50)
   sessions connecting and logging in through the listener at once.
2. Idle sessions: IDLE_SESSIONS sessions (100) log in and SELECT INBOX of
   10,000 messages one after another and stay; their SELECT times, the
   memory of each, and of all of them (RSS, and PSS, which counts shared
   pages once): imapd -d (LOGIN), imapd --preauth processes, Dovecot.
3. The stress client (tests/imap_stress.py) with 1, 10 and 50 sessions,
   the same seed for every server, each on its own fresh sandbox with
   mail.local delivering to INBOX meanwhile: commands per second, errors,
   violations of the model, command latency (median, 99th percentile,
   slowest, and commands slower than a second; IDLE left out), and memory
   per session and in all.

Every figure is the median of BENCH_RUNS runs (3) with min and max.  A
stress run lasts 30 s (BENCH_SCALE scales it, and the mailbox of part 2).
As root, every server runs as `nobody` (Dovecot refuses root), from the
test stage, byte-compiled first as an installation is.  RSS per session is
the largest of samples taken every half second; VmHWM also counts the
16 MiB the login's scrypt check holds for some 25 ms.
"""

import os
import re
import statistics
import subprocess
import sys
import threading

from common import REPO, SCALE, generate_spool, scaled, scrypt_check_seconds
from stats import HIGHER, LOWER, RUNS, Figure, Table, memory_kib, peer_version, save

sys.path.insert(0, str(REPO / "tests"))

import imap_stress  # noqa: E402  (tests/ is on the path only now)
from imap_support import DOVECOT_IMAP, RUN_AS, chown_tree, imapd_command, shared_sandbox  # noqa: E402
from imap_wire import Session, SocketSession  # noqa: E402
from procs import children_of  # noqa: E402

SEED = 2024
SESSIONS = (1, 10, 50)
IDLE_SESSIONS = 100
IDLE_MESSAGES = scaled(10_000)
LOGINS = max(10, scaled(40))
CONCURRENT = 50  # sessions logging in at once
SHOWN = 3  # errors and violations printed per run
STALL = 1.0  # seconds: a command slower than this is a stall


# --- servers --------------------------------------------------------------------------


class Listener:
    """`imapd -d` on a free loopback port, as RUN_AS; sessions log in over TCP."""

    def __init__(self, box):
        configure_imap(box, listen="127.0.0.1:0", max_sessions="500", max_sessions_per_address="0")
        self.proc = subprocess.Popen(imapd_command(box, as_user=RUN_AS, preauth=False) + ["-d"],
                                     stderr=subprocess.PIPE, text=True, env=box.env)
        for line in self.proc.stderr:
            found = re.search(r"listening on [^ ]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            raise RuntimeError("imapd -d did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def session(self, timeout=60):
        return SocketSession(("127.0.0.1", self.port), "alice", "alice", timeout=timeout,
                             server_pid=self.server_pid)

    def server_pid(self, client):
        """The listener's child serving the connection from CLIENT (host, port), found through its socket."""
        host, port = client
        remote = "%08X:%04X" % (int.from_bytes(bytes(map(int, host.split("."))), "little"), port)
        inode = None
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[2] == remote:
                    inode = fields[9]
        for pid in children_of(self.proc.pid):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
            except OSError:
                continue
        return None

    def stop(self):
        for pid in children_of(self.proc.pid):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        self.proc.terminate()
        self.proc.wait(30)


def configure_imap(box, **keys):
    """Set keys of the sandbox's [imap] section, replacing what is there."""
    lines = open(box.conf).read().splitlines()
    start = lines.index("[imap]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    kept = [line for line in lines[start:end] if line.split("=")[0].strip() not in keys]
    lines[start:end] = [f"{key} = {value}" for key, value in keys.items()] + kept
    with open(box.conf, "w") as f:
        f.write("\n".join(lines) + "\n")


def targets(box, server):
    """(imap_stress.Target, what to stop afterwards) for "imapd -d", "imapd --preauth" or "dovecot"."""
    if server == "imapd -d":
        listener = Listener(box)
        base = imap_stress.target(box, "imapd")
        base.name, base.connect = "imapd-d", listener.session
        return base, listener.stop
    return imap_stress.target(box, "dovecot" if server == "dovecot" else "imapd"), lambda: None


# --- 1. LOGIN ----------------------------------------------------------------------------


class Burners:
    """Two busy processes, one per core: a loaded machine."""

    def __init__(self, count=2):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def login_times(box, listener, count):
    """(seconds from LOGIN to OK through the listener, the same through inetd-style processes)."""
    through_listener = []
    for _ in range(count):
        session = listener.session()
        through_listener.append(session.login.ended - session.login.started)
        session.close()
    through_inetd = []
    for _ in range(count):
        session = Session(imapd_command(box, as_user=RUN_AS, preauth=False), box.env)
        reply = session.command("LOGIN alice alice")
        through_inetd.append(reply.ended - reply.started)
        session.close()
    return through_listener, through_inetd


def logins_at_once(listener, count=CONCURRENT):
    """Seconds from LOGIN to OK of COUNT sessions that connect and log in through the listener at once."""
    start = threading.Barrier(count)
    times, failures = [], []

    def one():
        start.wait(timeout=60)
        try:
            session = listener.session()
        except Exception as exc:  # noqa: BLE001 - counted, then reported once all are done
            failures.append(exc)
            return
        times.append(session.login.ended - session.login.started)
        session.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if failures or len(times) != count:
        raise RuntimeError(f"{len(failures)} of {count} concurrent logins failed: {failures[:1]}")
    return times


def password_check(box):
    return scrypt_check_seconds((box.dir / "passwd").read_text().splitlines()[0].split(":")[1])


def logins():
    figures = {}
    for _ in range(RUNS):
        sandbox = shared_sandbox()
        box = next(sandbox)
        listener = Listener(box)
        try:
            figures.setdefault("check", Figure()).add(password_check(box))
            for load in ("idle", "loaded"):
                burners = Burners() if load == "loaded" else None
                try:
                    by_listener, by_inetd = login_times(box, listener, LOGINS)
                finally:
                    if burners:
                        burners.stop()
                for mode, times in (("-d", by_listener), ("inetd", by_inetd)):
                    figures.setdefault((mode, load, "median"), Figure()).add(statistics.median(times))
                    figures.setdefault((mode, load, "p90"), Figure()).add(sorted(times)[int(0.9 * len(times))])
                    figures.setdefault((mode, load, "max"), Figure()).add(max(times))
            at_once = logins_at_once(listener)
            figures.setdefault("at once median", Figure()).add(statistics.median(at_once))
            figures.setdefault("at once max", Figure()).add(max(at_once))
            figures.setdefault("at once stalls", Figure()).add(sum(1 for t in at_once if t > STALL))
        finally:
            listener.stop()
            next(sandbox, None)
    table = Table(f"LOGIN to OK, {LOGINS} logins a run (no Dovecot figure: its passwd-file hashes differ)", "-")
    table.row("scrypt check alone (cost 14)", "ms", figures["check"], scale=1000)
    for mode in ("-d", "inetd"):
        for load in ("idle", "loaded"):
            for stat in ("median", "p90", "max"):
                table.row(f"imapd {mode}, {load} machine, {stat}", "ms", figures[(mode, load, stat)], scale=1000)
    table.row(f"imapd -d, {CONCURRENT} logging in at once, median", "ms", figures["at once median"], scale=1000)
    table.row(f"imapd -d, {CONCURRENT} logging in at once, max", "ms", figures["at once max"], scale=1000)
    table.row(f"  of those, slower than {STALL:g} s", "", figures["at once stalls"], digits=0)
    return table


# --- 2. idle sessions ----------------------------------------------------------------------


def idle_sessions(server):
    """One run: IDLE_SESSIONS sessions each SELECT INBOX and stay; {figure: value}."""
    sandbox = shared_sandbox()
    box = next(sandbox)
    target, stop = targets(box, server)
    sessions = []
    try:
        generate_spool(box.spool("alice"), IDLE_MESSAGES, 10_700)
        if RUN_AS:
            chown_tree(box.dir, RUN_AS)
        warm = target.session()
        warm.command("SELECT INBOX")                   # the index made once: the sessions find it
        warm.close()
        selects = []
        for _ in range(IDLE_SESSIONS):
            session = target.session()
            sessions.append(session)
            reply = session.command("SELECT INBOX")
            if not reply.ok:
                raise RuntimeError(f"{server}: SELECT failed: {reply.text}")
            selects.append(reply.ended - reply.started)
        memory = [memory_kib(s.pid) for s in sessions if s.pid]
        rss, pss, uss = (sum(column) / 1024 for column in zip(*memory))
        return {"select_median": statistics.median(selects), "select_max": max(selects),
                "rss_mean": rss / len(memory), "pss_mean": pss / len(memory), "uss_mean": uss / len(memory),
                "rss_total": rss, "pss_total": pss}
    finally:
        for session in sessions:
            session.close()
        stop()
        next(sandbox, None)


def idle():
    servers = ("imapd -d", "imapd --preauth", "dovecot")
    figures = {server: {} for server in servers}
    for _ in range(RUNS):
        for server in servers:
            for key, value in idle_sessions(server).items():
                figures[server].setdefault(key, Figure()).add(value)
    tables = []
    for ours in ("imapd -d", "imapd --preauth"):
        table = Table(f"{IDLE_SESSIONS} idle sessions, INBOX of {IDLE_MESSAGES} messages selected: {ours}",
                      "Dovecot")
        for work, unit, key, scale in (("SELECT, median", "ms", "select_median", 1000),
                                       ("SELECT, slowest", "ms", "select_max", 1000),
                                       ("RSS per session", "MiB", "rss_mean", 1),
                                       ("PSS per session", "MiB", "pss_mean", 1),
                                       ("USS per session (its own pages)", "MiB", "uss_mean", 1),
                                       ("RSS, all sessions", "MiB", "rss_total", 1),
                                       ("PSS, all sessions", "MiB", "pss_total", 1)):
            table.row(work, unit, figures[ours][key], figures["dovecot"][key], LOWER, scale)
        tables.append(table)
    return tables


# --- 3. the stress client --------------------------------------------------------------------


def stress_run(server, sessions, seconds):
    sandbox = shared_sandbox()
    box = next(sandbox)
    target, stop = targets(box, server)
    try:
        report = imap_stress.run(target, seed=SEED, sessions=sessions, seconds=seconds)
    finally:
        stop()
        next(sandbox, None)
    print("   ", report.summary(), flush=True)
    for text in report.errors[:SHOWN] + report.violations[:SHOWN]:
        print("       ", text[:400], flush=True)
    seen = [seen for seen, hwm in report.rss_kib.values()] or [0]
    peaks = [hwm or seen for seen, hwm in report.rss_kib.values()] or [0]
    return {"rate": report.total / report.seconds, "errors": len(report.errors),
            "violations": len(report.violations), "p50": report.latency_ms(0.5), "p99": report.latency_ms(0.99),
            "max": report.latency_ms(1), "stalls": sum(1 for t in report.latencies if t > STALL),
            "rss_mean": sum(seen) / len(seen) / 1024, "rss_max": max(seen) / 1024, "hwm_max": max(peaks) / 1024,
            "rss_total": report.total_kib[0] / 1024, "pss_total": report.total_kib[1] / 1024}


def stress():
    seconds = max(5.0, 30 * SCALE)
    servers = ("imapd -d", "imapd --preauth", "dovecot")
    tables = []
    for sessions in SESSIONS:
        figures = {server: {} for server in servers}
        for _ in range(RUNS):
            for server in servers:
                for key, value in stress_run(server, sessions, seconds).items():
                    figures[server].setdefault(key, Figure()).add(value)
        for ours in ("imapd -d", "imapd --preauth"):
            table = Table(f"stress client, {sessions} session(s), {seconds:.0f} s: {ours}", "Dovecot")
            for work, unit, key, better, digits in (
                    ("commands per second", "/s", "rate", HIGHER, 0), ("errors", "", "errors", LOWER, 0),
                    ("violations", "", "violations", LOWER, 0), ("latency, median", "ms", "p50", LOWER, 1),
                    ("latency, 99th percentile", "ms", "p99", LOWER, 0), ("latency, slowest", "ms", "max", LOWER, 0),
                    (f"commands slower than {STALL:g} s", "", "stalls", LOWER, 0),
                    ("RSS per session (sampled), mean", "MiB", "rss_mean", LOWER, 1),
                    ("RSS per session (sampled), largest", "MiB", "rss_max", LOWER, 1),
                    ("VmHWM, largest (with LOGIN's scrypt)", "MiB", "hwm_max", LOWER, 1),
                    ("RSS, all sessions at once", "MiB", "rss_total", LOWER, 0),
                    ("PSS, all sessions at once", "MiB", "pss_total", LOWER, 0)):
                table.row(work, unit, figures[ours][key], figures["dovecot"][key], better, digits=digits)
            tables.append(table)
    return tables


def byte_compile_stage():
    """Sessions run as another user start from the stage: compile it once, as an installation is."""
    if RUN_AS:
        from stage import stage
        subprocess.run([stage().python, "-m", "compileall", "-q", str(stage().lib)], check=True)


def main():
    if not os.path.exists(DOVECOT_IMAP):
        print("dovecot-imapd is not installed; nothing to compare with")
        return 0
    byte_compile_stage()
    parts = sys.argv[1:] or ["login", "idle", "stress"]
    tables = []
    if "login" in parts:
        tables.append(logins())
    if "idle" in parts:
        tables += idle()
    if "stress" in parts:
        tables += stress()
    save("imap_stress", tables, dovecot=peer_version(["dovecot", "--version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
