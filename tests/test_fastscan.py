"""The two-core scan: shared-prefix lanes rank like Scorer; frames; the worker process end to end."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch

from logllama_tui.config import UNK, ModelConfig
from logllama_tui.fastscan import ScoreWorker, read_frame, score_stream, verdicts, write_frame
from logllama_tui.lean import LeanLlama
from logllama_tui.model import build_model
from logllama_tui.prefix import LaneScorer
from logllama_tui.records import Sequence
from logllama_tui.scoring import Scorer

N_KEYS, K = 10, 4
TINY = dict(n_layers=2, n_heads=2, hidden=8, head_dim=4, intermediate=16, max_positions=16)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return build_model(ModelConfig(**TINY), vocab_size=4 + N_KEYS).eval()


def tuples(seed: int, n: int = 60) -> list[tuple[int, ...]]:
    """Sequences sharing prefixes (as logs do), some past the context of 16."""
    rng = random.Random(seed)
    base = [rng.randint(4, 13) for _ in range(14)]
    tail = [UNK, *range(4, 14)]
    out = {tuple(base[: rng.randint(0, 14)] + [rng.choice(tail) for _ in range(rng.randint(0, 12))])
           for _ in range(n)}
    return sorted(out, key=lambda t: (len(t), t))


def test_lanes_rank_like_scorer() -> None:
    model = tiny()
    seqs = tuples(1)
    ref = Scorer(model, N_KEYS, K).score([Sequence("x", list(t)) for t in seqs])
    lanes = LaneScorer(LeanLlama.from_hf(model), N_KEYS, K, lanes=3)
    got = lanes.rank(seqs[:25]) + lanes.rank(seqs[25:])
    for (ranks, cands), r in zip(got, ref, strict=True):
        vs = [*r.verdicts, r.end]
        assert ranks == [v.rank for v in vs]
        assert sorted(cands) == [j for j, v in enumerate(vs) if v.candidates]
    short = [t for t in seqs if len(t) < 15]  # within the context: no restarts
    fresh = LaneScorer(LeanLlama.from_hf(model), N_KEYS, K, lanes=3)
    fresh.rank(short)
    assert fresh.forward_keys < 0.8 * sum(len(t) + 1 for t in short)  # shared prefixes ran once


def test_verdicts_match_scorer() -> None:
    model = tiny()
    seqs = [Sequence(str(i), list(t)) for i, t in enumerate(tuples(2, 20))]
    ref = Scorer(model, N_KEYS, K).score(seqs)
    for s, r in zip(seqs, ref, strict=True):
        vs = [*r.verdicts, r.end]
        ranked = ([v.rank for v in vs], {j: v.candidates for j, v in enumerate(vs) if v.candidates})
        got = verdicts(s, ranked, K)
        assert got.anomalous == r.anomalous
        assert [(v.rank, v.kind, v.candidates) for v in got.verdicts] == \
            [(v.rank, v.kind, v.candidates) for v in r.verdicts]
        assert got.anomalous_keys() == [(i, got.verdicts[i]) for i, _ in r.anomalous_keys()]


def test_frames_round_trip() -> None:
    buf = io.BytesIO()
    write_frame(buf, {"seqs": [[4, 5], []]})
    write_frame(buf, {"x": 1})
    buf.seek(0)
    assert read_frame(buf) == {"seqs": [[4, 5], []]}
    assert read_frame(buf) == {"x": 1}
    assert read_frame(buf) is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from logllama_tui.checkpoint import save_checkpoint
    from logllama_tui.config import ModelConfig as MC
    from logllama_tui.config import TrainConfig, to_dict
    from logllama_tui.parser import LogParser

    parser = LogParser()
    for name in range(N_KEYS):
        parser.vocab.add(f"c{name + 1}")
    meta = {"arch": "llama", "model_config": to_dict(MC(**TINY)), "train_config": to_dict(TrainConfig()),
            "vocab_size": 4 + N_KEYS, "n_keys": N_KEYS}
    out = tmp_path_factory.mktemp("ckpt") / "m"
    save_checkpoint(out, tiny(), parser, meta)
    return out


def test_worker_process_end_to_end(checkpoint: Path) -> None:
    seqs = [Sequence(str(i), list(t)) for i, t in enumerate(tuples(3, 40))] * 2
    ref = Scorer(tiny(), N_KEYS, K).score(seqs)
    workers = [ScoreWorker(str(checkpoint), K, 5, "cpu") for _ in range(2)]
    try:
        got = [s for batch in score_stream(iter(seqs), workers, K, buffer=7, in_flight=2)
               for s in batch]
        assert workers[0].wait_ready()["engine"].startswith("lean llama")
    finally:
        for w in workers:
            w.close()
    assert [g.seq.sid for g in got] == [s.sid for s in seqs]  # input order kept
    assert [[v.rank for v in (*g.verdicts, g.end)] for g in got] == \
        [[v.rank for v in (*r.verdicts, r.end)] for r in ref]
    assert [g.anomalous for g in got] == [r.anomalous for r in ref]


def test_worker_error_is_a_clear_message(tmp_path: Path) -> None:
    from logllama_tui.errors import LogLlamaError

    worker = ScoreWorker(str(tmp_path / "missing"), K, 5, "cpu")
    with pytest.raises(LogLlamaError):
        list(score_stream(iter([Sequence("a", [4, 5])]), [worker], K))
