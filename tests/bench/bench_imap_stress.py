"""The IMAP stress client (tests/imap_stress.py) with 1, 10 and 50 sessions, on imapd and on Dovecot.

Same seed for both servers, each on its own fresh sandbox with mail.local
delivering to INBOX meanwhile.  For each run: commands per second, errors
(refused or failed commands, lost connections), violations of the model
(the first few are printed), command latency (median, 99th percentile,
slowest; IDLE left out) and the memory of the session processes: the mean
and the largest of each process's peak RSS (VmHWM).

Default: 30 s per run (BENCH_SCALE scales it).  Dovecot is configured for
concurrent sessions on one mbox (imap_support.Dovecot); as root both
servers run as `nobody`, since Dovecot refuses root.
"""

import os
import sys

from common import REPO, SCALE

sys.path.insert(0, str(REPO / "tests"))

import imap_stress  # noqa: E402  (tests/ is on the path only now)
from imap_support import DOVECOT_IMAP, shared_sandbox  # noqa: E402

SEED = 2024
SESSIONS = (1, 10, 50)
SHOWN = 3  # violations printed per run


def one_run(server, sessions, seconds):
    sandbox = shared_sandbox()
    box = next(sandbox)
    try:
        return imap_stress.run(imap_stress.target(box, server), seed=SEED, sessions=sessions, seconds=seconds)
    finally:
        next(sandbox, None)  # removes it


def main():
    if not os.path.exists(DOVECOT_IMAP):
        print("dovecot-imapd is not installed; nothing to compare with")
        return 0
    seconds = max(5.0, 30 * SCALE)
    rows = []
    for sessions in SESSIONS:
        for server in ("imapd", "dovecot"):
            report = one_run(server, sessions, seconds)
            print(report.summary(), flush=True)
            for text in report.errors[:SHOWN] + report.violations[:SHOWN]:
                print("   ", text[:400])
            peaks = [hwm or seen for seen, hwm in report.rss_kib.values()] or [0]
            rows.append((server, sessions, report.total / report.seconds, len(report.errors),
                         len(report.violations), report.latency_ms(0.5), report.latency_ms(0.99),
                         report.latency_ms(1), sum(peaks) / len(peaks) / 1024, max(peaks) / 1024))
    print(f"{'server':8} {'sessions':>8} {'commands/s':>11} {'errors':>7} {'violations':>10} {'median ms':>10} "
          f"{'p99 ms':>7} {'max ms':>7} {'RSS mean MiB':>13} {'RSS peak MiB':>13}")
    for server, sessions, rate, errors, violations, median, p99, slowest, mean, peak in rows:
        print(f"{server:8} {sessions:8d} {rate:11.0f} {errors:7d} {violations:10d} {median:10.1f} {p99:7.0f} "
              f"{slowest:7.0f} {mean:13.1f} {peak:13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
