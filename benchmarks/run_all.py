"""Run every benchmark, one command: each script writes benchmarks/out/<name>.md; this joins them.

Run: .venv/bin/python benchmarks/run_all.py [--data ../shared/data] [--runs 3] [--only speed,parse]
Writes benchmarks/out/BENCHMARKS.md (the sections in order, each with its own exact command).
Scripts skip cleanly when the data is absent. detect and rl train models (tens of minutes), tail
runs the TUI for about 10; `--only speed,parse` is the quick set.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"speed": "bench_speed.py", "parse": "bench_parse.py", "detect": "bench_detect.py",
           "rl": "bench_rl.py", "tail": "bench_tail.py", "slices": "bench_slices.py"}
"""name -> script; each writes benchmarks/out/<name>.md."""
TAKES_RUNS = {"speed", "parse", "tail"}
TAKES_DATA = {"speed", "parse", "detect", "tail", "slices"}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated: " + ", ".join(SCRIPTS))
    args = ap.parse_args(argv)
    out_dir = ROOT / "benchmarks" / "out"
    parts, failed = [], []
    for name in args.only.split(","):
        script = SCRIPTS.get(name.strip())
        if script is None or not (ROOT / "benchmarks" / script).exists():
            print(f"run_all: no benchmark {name!r}; skipping", file=sys.stderr)
            continue
        cmd = [sys.executable, str(ROOT / "benchmarks" / script)]
        if name in TAKES_DATA:
            cmd += ["--data", args.data]
        if name in TAKES_RUNS:
            cmd += ["--runs", str(args.runs)]
        print(f"run_all: {' '.join(cmd)}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT)
        took = time.perf_counter() - start
        md = out_dir / f"{name}.md"
        if done.returncode != 0:
            failed.append(name)
        elif md.exists() and md.stat().st_mtime >= time.time() - took - 1:
            parts.append(md.read_text(encoding="utf-8").rstrip() + f"\n\n({name}: {took:.0f} s)\n")
    command = ".venv/bin/python benchmarks/run_all.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    text = f"# Benchmarks\n\nCommand: `{command}`\n\n" + "\n".join(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "BENCHMARKS.md").write_text(text, encoding="utf-8")
    print(f"run_all: wrote {out_dir / 'BENCHMARKS.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
