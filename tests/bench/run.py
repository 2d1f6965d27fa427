"""Run every benchmark in tests/bench (bench_*.py), one process each; `make bench`.

Each benchmark prints its own report, measuring mailsuite against the
reference program on this machine in the same run.  BENCH_SCALE (default
1.0) scales the work for a quick look: `make bench BENCH_SCALE=0.1`.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    only = sys.argv[1:]
    status = 0
    for script in sorted(HERE.glob("bench_*.py")):
        if only and script.stem not in only and script.stem[6:] not in only:
            continue
        print(f"== {script.stem}", flush=True)
        status |= subprocess.run([sys.executable, str(script)]).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
