"""Speed benchmark (issue 7): parse, end-to-end scan vs bare drain3, scoring, streaming, training,
start-up and peak RSS, each the median of >= 3 runs (min-max), ratios taken in the same run.

Run: .venv/bin/python benchmarks/bench_speed.py [--data ../shared/data] [--runs 3] [--model DIR]
Prints a markdown section and writes it to benchmarks/out/speed.md. Skips cleanly without the data.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
EXE = str(Path(PY).with_name("logllama"))

BARE = """
import sys, time
from drain3 import TemplateMiner
from logllama_tui.config import ParserConfig
from logllama_tui.formats import get_format
from logllama_tui.parser import _miner_config
from logllama_tui.readers import iter_lines
miner = TemplateMiner(persistence_handler=None, config=_miner_config(ParserConfig()))
for rec in get_format("hdfs").records(iter_lines(sys.argv[1])):
    miner.add_log_message(rec.content)
"""
"""The bare drain3 loop, as a whole process: the same reader, the same hdfs content split and the
same masks as `scan`, with drain3's own add_log_message (learning, no model)."""


def stat(values: list[float]) -> str:
    """'median (min-max)'."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def run_process(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the process and its children) of one command."""
    wall, mb, _ = run_counted(cmd)
    return wall, mb


def run_counted(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds) of one command, its children included (wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def bench_scan(data: Path, model: str, runs: int) -> list[str]:
    """Whole-process scan of HDFS_dev.log x 3 against the bare drain3 loop, interleaved."""
    src = data / "hdfs" / "HDFS_dev.log"
    big = Path(tempfile.gettempdir()) / "logllama_bench_hdfs3.log"
    if not big.exists() or big.stat().st_size != 3 * src.stat().st_size:
        big.write_bytes(src.read_bytes() * 3)
    lines = sum(1 for _ in big.open("rb"))
    cmds = {
        "bare drain3 loop (process)": [PY, "-c", BARE, str(big)],
        "`logllama scan` (two cores: parse here, prefix trie in a child, scoring as sessions grow)":
            [EXE, "scan", str(big), "--model", model],
        "`logllama scan --engine inline` (one process, transformers + Scorer)":
            [EXE, "scan", str(big), "--model", model, "--engine", "inline"],
    }
    if os.environ.get("BENCH_INLINE") != "1":
        del cmds["`logllama scan --engine inline` (one process, transformers + Scorer)"]
    rates: dict[str, list[float]] = {k: [] for k in cmds}
    rss: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    ratios: list[float] = []
    loads: list[float] = []
    for _ in range(runs):
        got = {}
        loads.append(os.getloadavg()[0])
        for label, cmd in cmds.items():
            wall, mb, used = run_counted(cmd)
            got[label] = lines / wall
            rates[label].append(lines / wall)
            rss[label].append(mb)
            cpu[label].append(used)
        bare, scan = list(got.values())[:2]
        ratios.append(scan / bare)
    rows = [f"`{big.name}` = `HDFS_dev.log` x 3 ({lines:,} lines), model `{model}`; whole processes "
            "(start-up, imports, model loading included), runs interleaved; CPU s = user + system "
            "of the process and its children (more than the wall time when two cores work).", "",
            "| what | lines/s | CPU s | peak RSS MB |", "|---|---|---|---|"]
    rows += [f"| {k} | {stat(v)} | {stat(cpu[k])} | {stat(rss[k])} |" for k, v in rates.items()]
    rows += ["", f"scan / bare drain3, per run: {', '.join(f'{r:.2f}' for r in ratios)} "
             f"(median {statistics.median(ratios):.2f}; goal >= 0.50); load average at the start "
             f"of each run: {', '.join(f'{x:.1f}' for x in loads)}."]
    return rows


def timed(fn: Callable[[], int], runs: int) -> list[float]:
    """Units per second of fn() (it returns how many units it did), `runs` times."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        n = fn()
        out.append(n / (time.perf_counter() - start))
    return out


def bench_parse(data: Path, runs: int) -> list[str]:
    """LogParser.learn and .match lines/s on HDFS_dev.log (in memory, no model)."""
    from logllama_tui.formats import get_format
    from logllama_tui.parser import LogParser
    from logllama_tui.readers import iter_lines

    records = list(get_format("hdfs").records(iter_lines(str(data / "hdfs" / "HDFS_dev.log"))))
    trained = LogParser()
    for r in records:
        trained.learn(r)

    def learn() -> int:
        p = LogParser()
        for r in records:
            p.learn(r)
        return len(records)

    def match() -> int:
        p = LogParser.from_json(trained.to_json())
        for r in records:
            p.match(r)
        return len(records)

    return ["| what | lines/s |", "|---|---|",
            f"| `LogParser.learn`, HDFS_dev.log ({len(records):,} lines) | {stat(timed(learn, runs))} |",
            f"| `LogParser.match` (what scan runs) | {stat(timed(match, runs))} |"]


def bench_scoring(runs: int) -> list[str]:
    """Batched Scorer keys/s (128 x 20 keys, distinct sequences) with transformers and lean."""
    import torch

    from logllama_tui.config import ModelConfig
    from logllama_tui.lean import LeanLlama
    from logllama_tui.model import build_model
    from logllama_tui.prefix import LeanAsHF
    from logllama_tui.records import Sequence as Seq
    from logllama_tui.scoring import Scorer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hf = build_model(ModelConfig(), vocab_size=30).eval()
    rng = random.Random(0)

    def batch(model: object) -> Callable[[], int]:
        def go() -> int:
            seqs = [Seq(str(i), [rng.randint(4, 29) for _ in range(20)]) for i in range(128)]
            Scorer(model, 26, 13, batch_size=128).score(seqs)
            return 128 * 21
        return go

    rows = ["| model, 1 thread | keys/s (128 sequences x 20 keys + ends) |", "|---|---|"]
    rows.append(f"| LlamaForCausalLM (transformers, sdpa) | {stat(timed(batch(hf), runs))} |")
    rows.append(f"| lean forward, same weights | {stat(timed(batch(LeanAsHF(LeanLlama.from_hf(hf))), runs))} |")
    return rows


def simulate(scorer: object, streams: int, window: int, chunk: int, steps: int) -> tuple[float, float]:
    """(keys/s, p95 step ms): each step `chunk` new keys per stream, sequences of `window` keys."""
    rng = random.Random(1)
    keys = [[rng.randint(4, 29) for _ in range(window)] for _ in range(streams)]
    count = [0] * streams
    lat = []
    start = time.perf_counter()
    for _ in range(steps):
        jobs = []
        for s in range(streams):
            left = chunk
            while left:
                w, pos = divmod(count[s], window)
                end = min(window, pos + left)
                jobs.append(((s, w), keys[s][:end], pos))
                left -= end - pos
                count[s] += end - pos
        t0 = time.perf_counter()
        scorer.rank(jobs)  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - t0)
    rate = steps * chunk * streams / (time.perf_counter() - start)
    return rate, sorted(lat)[int(0.95 * (len(lat) - 1))] * 1000


def bench_stream(runs: int) -> list[str]:
    """StreamScorer keys/s and p95 step latency (a step = what a 50 ms tail batch brings)."""
    import torch

    from logllama_tui.config import ModelConfig
    from logllama_tui.model import build_model
    from logllama_tui.stream import StreamScorer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    long = (1, 12_000, 250, 48)
    cases = (("1 busy stream, 20-key windows (count/session), 250 keys per step", 1, 20, 250, 48, {}),
             ("1 busy stream, one 12,000-key sequence (slices past 128 keys), 250 keys per step",
              *long, {}),
             ("the same, slices of the whole 512 context restarting from its last half (the rule "
              "before be348b4)", *long, {"slice_keys": 512, "overlap": 256}),
             ("16 streams x 16 keys per step, 200-key sequences", 16, 200, 16, 24, {}))
    rows = ["| model: case (1 thread) | keys/s | p95 step ms |", "|---|---|---|"]
    for arch in ("llama", "deeplog"):
        model = build_model(ModelConfig(arch=arch), vocab_size=30).eval()
        todo = [c for c in cases if arch == "llama" or not c[-1]]  # an LSTM has no slices
        got: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in todo}
        for _ in range(runs):  # cases interleaved run by run: ratios under the same load
            for label, streams, window, chunk, steps, kw in todo:
                got[label].append(simulate(StreamScorer(model, 26, 13, **kw), streams, window,
                                           chunk, steps))
        for label, g in got.items():
            rows.append(f"| {arch}: {label} | {stat([x[0] for x in g])} | {stat([x[1] for x in g])} |")
    return rows


def bench_train(runs: int) -> list[str]:
    """Training keys/s (forward + backward + AdamW step, batches of 64 x 20 keys, 1 thread)."""
    import torch

    from logllama_tui.config import ModelConfig
    from logllama_tui.model import build_model

    torch.set_num_threads(1)
    rows = ["| model | train keys/s |", "|---|---|"]
    for arch in ("llama", "deeplog"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=arch), vocab_size=30).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> int:
            for _ in range(3):
                ids = torch.randint(4, 30, (64, 21))
                logits = model(input_ids=ids[:, :-1], attention_mask=torch.ones_like(ids[:, :-1])).logits
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 30), ids[:, 1:].reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
            return 3 * 64 * 20

        rows.append(f"| {arch} ({'paper size' if arch == 'llama' else '2 x 64 LSTM'}) | {stat(timed(step, runs))} |")
    return rows


def bench_startup(runs: int) -> list[str]:
    """`logllama --help` and the TUI's first screen, as whole processes (ms)."""
    helps = [run_process([EXE, "--help"])[0] * 1000 for _ in range(max(runs, 5))]
    rows = ["| what | ms |", "|---|---|", f"| `logllama --help` | {stat(helps)} |"]
    probe = ROOT / "sample_logs" / "hdfs_sample.log"
    code = ("import asyncio, time, sys\nt = time.perf_counter()\n"
            "from logllama_tui.tui import make_app\n"
            f"app = make_app([{str(probe)!r}], start_threads=False)\n"
            "async def main():\n    async with app.run_test() as pilot:\n        await pilot.pause()\n"
            "        print((time.perf_counter() - t) * 1000)\nasyncio.run(main())\n")
    firsts = []
    for _ in range(runs):
        done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return rows + [f"| TUI first screen | not measured: {done.stderr.strip().splitlines()[-1:]} |"]
        firsts.append(float(done.stdout.strip().splitlines()[-1]))
    return rows + [f"| TUI first screen (import, build, mount under `App.run_test`) | {stat(firsts)} |"]


def ensure_model(data: Path, model: str | None) -> str:
    """--model, or an HDFS model trained once (2 epochs on 10% of HDFS_dev) and kept in /tmp."""
    if model:
        return model
    out = Path(tempfile.gettempdir()) / "logllama_bench_speed_model"
    if not (out / "logllama.json").exists():
        subprocess.run([EXE, "train", str(data / "hdfs" / "HDFS_dev.log"), "--labels",
                        str(data / "hdfs" / "HDFS_dev_anomaly_label.csv"), "--train-fraction", "0.1",
                        "--epochs", "2", "--out", str(out)], check=True, capture_output=True)
    return str(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=None, help="checkpoint for the scan rows [default: train one]")
    ap.add_argument("--only", default="parse,scan,scoring,stream,train,startup")
    args = ap.parse_args(argv)
    data, runs, only = Path(args.data), max(1, args.runs), set(args.only.split(","))
    if not (data / "hdfs" / "HDFS_dev.log").exists():
        print(f"bench_speed: {data}/hdfs/HDFS_dev.log not found; skipping.")
        return 0
    command = ".venv/bin/python benchmarks/bench_speed.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    out = ["## Speed", "", f"Command: `{command}`", "",
           f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
           f"{os.getloadavg()[0]:.1f} at the start; median of {runs} runs (min-max).", ""]
    sections = [("parse", "Parsing", lambda: bench_parse(data, runs)),
                ("scan", "End-to-end scan vs bare drain3", lambda: bench_scan(data, ensure_model(data, args.model), runs)),
                ("scoring", "Batched scoring", lambda: bench_scoring(runs)),
                ("stream", "Streaming scoring (tail)", lambda: bench_stream(runs)),
                ("train", "Training", lambda: bench_train(runs)),
                ("startup", "Start-up", lambda: bench_startup(runs))]
    for key, title, fn in sections:
        if key in only:
            out += [f"### {title}", ""] + fn() + [""]
            print("\n".join(out[-3:]), flush=True)
    text = "\n".join(out) + "\n"
    print(text)
    dest = ROOT / "benchmarks" / "out"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "speed.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
