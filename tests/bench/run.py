"""Run the benchmarks in tests/bench (bench_*.py), each in its own process; `make bench`.

Each benchmark measures mailsuite against the reference programs on this
machine in the same run, every figure the median of at least three runs
(with the minimum and the maximum), and writes its figures as JSON.  This
runner gathers them, with the kernel, the file system and the peers'
versions, into tests/bench/results/RUN.json, and prints every ratio
saying which way is better.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_SCALE = 0.1         # a few minutes on a 2-core machine; --full is the scale of the published table


def available():
    """{short name: script} of every benchmark: bench_smtp.py is `smtp`."""
    return {script.stem[len("bench_"):]: script for script in sorted(HERE.glob("bench_*.py"))}


def parse(argv):
    benches = available()
    parser = argparse.ArgumentParser(prog="tests/bench/run.py", description=__doc__.split("\n\n")[0],
                                     epilog="benchmarks: " + ", ".join(benches))
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (smtp or bench_smtp, ...); default: all")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")),
                        help="measurements per figure (at least 3; the median is reported)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", DEFAULT_SCALE)),
                       help=f"share of the full-scale work (default {DEFAULT_SCALE})")
    scale.add_argument("--full", action="store_const", const=1.0, dest="scale", help="full scale (--scale 1)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="directory for the JSON results (default tests/bench/results)")
    args = parser.parse_args(argv)
    chosen = []
    for name in args.names:
        short = name[len("bench_"):] if name.startswith("bench_") else name
        short = short[:-3] if short.endswith(".py") else short
        if short not in benches:
            parser.error(f"no benchmark named {name!r} (choose from {', '.join(benches)})")
        chosen.append(short)
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    if args.scale <= 0:
        parser.error("--scale must be positive")
    return args, benches, chosen or list(benches)


def main(argv=None):
    args, benches, chosen = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        print("\n".join(benches))
        return 0
    import stats
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parts = args.out / f"{stamp}.d"
    parts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BENCH_SCALE=str(args.scale), BENCH_RUNS=str(args.runs), BENCH_RESULTS=str(parts))
    print(f"scale {args.scale}, {args.runs} runs per figure; results in {args.out}/{stamp}.json", flush=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "scale": args.scale, "runs": args.runs,
              "environment": {**stats.machine(), "peers": stats.peers()}, "benchmarks": {}, "status": {}}
    status = 0
    for name in chosen:
        print(f"== {name}", flush=True)
        code = subprocess.run([sys.executable, str(benches[name])], env=env).returncode
        report["status"][name] = code
        status |= code
        part = parts / f"{name}.json"
        if part.exists():
            report["benchmarks"][name] = json.loads(part.read_text())
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    (args.out / f"{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\nratios (each says which way is better):")
    for name, data in report["benchmarks"].items():
        for table in data["tables"]:
            for row in table["rows"]:
                if row["ratio"] is not None:
                    print(f"  {name}: {row['work']} ({row['unit']}): mailsuite / {table['peer']} = "
                          f"{row['ratio']:.2f}  (> 1 = mailsuite is better, {row['better']} is better)")
    return status


if __name__ == "__main__":
    sys.exit(main())
