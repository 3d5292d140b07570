"""`logllama finetune`: REINFORCE with the Top-K reward on labelled data or people's marks."""

from __future__ import annotations

from typing import Any

import click

from logllama_tui.cli import options
from logllama_tui.config import RLConfig

# torch, transformers and the pipeline are imported inside the function: `--help` stays fast.

_RL = RLConfig()
NO_LABELS = (
    "finetuning needs labels: the reward says whether a missed key was on a normal or an anomalous "
    "line. Give --labels CSV (BlockId,Label, loghub's anomaly_label.csv), data with inline labels "
    "(BGL/Thunderbird lines start with '-' or an alert tag), or --feedback FILE.jsonl of lines "
    "marked in `logllama tail`"
)


@click.command("finetune")
@click.argument("data", metavar="DATA...", nargs=-1, required=True)
@options.model_option(required=True)
@options.input_options()
@options.window_options()
@options.labels_option()
@click.option("--feedback", type=click.Path(dir_okay=False), default=None, metavar="FILE.jsonl",
              help="Marks made in `logllama tail` (false positive / anomaly) as the labels.")
@click.option("--ignore-other-models", is_flag=True,
              help="Skip --feedback marks made against another model instead of refusing them.")
@click.option("--episodes", type=int, default=_RL.episodes, show_default=True,
              help="Passes over the RL sequences.")
@click.option("--k", "k", default=None, metavar="K",
              help="Top-K during RL: a count or a fraction [default: the checkpoint's K].")
@click.option("--entropy-coef", type=float, default=_RL.entropy_coef, show_default=True,
              help="Weight of the entropy bonus.")
@click.option("--reward-clip", type=click.FloatRange(min=0.0, min_open=True),
              default=_RL.reward_clip, show_default=True, help="Rewards are clipped to +-this.")
@click.option("--gamma", type=click.FloatRange(0.0, 1.0), default=_RL.gamma, show_default=True,
              help="Discount of the return.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=_RL.lr,
              show_default=True, help="AdamW learning rate.")
@click.option("--seed", type=int, default=_RL.seed, show_default=True,
              help="Seeds the RL split, the shuffling and the sampling.")
@click.option("--rl-fraction", type=click.FloatRange(0.0, 1.0, min_open=True),
              default=_RL.rl_fraction, show_default=True,
              help="Share of the labelled sequences the model has not seen that RL uses (eval then "
              "excludes them).")
@click.option("--action", type=click.Choice(["true_key", "sampled"]), default=_RL.action,
              show_default=True, help="What the policy gradient acts on (see docs/rl.md).")
@click.option("--baseline", type=click.Choice(["reward", "position", "batch", "none"]),
              default=_RL.baseline, show_default=True, help="Baseline subtracted from the return.")
@click.option("--anomalous-hit-reward", type=float, default=_RL.anomalous_hit_reward,
              show_default=True, help="Reward when the true key is in the Top-K on an anomalous "
              "line (paper: 1; -1 also pushes undetected anomalies out).")
@click.option("--anomalous-focus", type=click.Choice(["all", "worst"]), default=_RL.anomalous_focus,
              show_default=True, help="Reward every position of an anomalous sequence, or only its "
              "least expected one.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_RL.batch_size,
              show_default=True, help="Sequences per update.")
@options.device_option()
@click.option("--out", required=True, metavar="NAME_OR_DIR",
              help="Where the finetuned model goes (a new checkpoint; the input is never changed).")
@click.option("--resume", is_flag=True,
              help="Continue the run that SIGINT/SIGTERM interrupted in --out (same model, data and "
              "options; it ends as the uninterrupted run would).")
@click.pass_context
def command(ctx: click.Context, data: tuple[str, ...], **kwargs: Any) -> None:
    """Finetune a trained model with REINFORCE and the Top-K reward (the paper's third stage).

    The reward needs labels: a BlockId,Label CSV, inline BGL/Thunderbird labels, or marks
    people made in `logllama tail`. By default RL uses a seeded share (--rl-fraction) of the
    labelled sequences the model did not train or validate on; they are recorded in the new
    checkpoint and `logllama eval` excludes them. Ctrl+C or SIGTERM saves the run so far in
    --out; --resume continues it.

    \b
    Examples:
      logllama finetune HDFS.log --labels anomaly_label.csv --model hdfs --out hdfs-rl
      logllama finetune BGL.log --model bgl --episodes 5 --out bgl-rl
      logllama finetune BGL.log --model bgl --episodes 5 --out bgl-rl --resume   # after Ctrl+C
      logllama finetune /var/log/app.log --model app --feedback ~/.local/share/logllama/feedback/app.jsonl --out app-rl
      logllama eval --compare hdfs hdfs-rl HDFS.log --labels anomaly_label.csv
    """
    import time

    from rich.console import Console

    from logllama_tui.checkpoint import out_path
    from logllama_tui.cli.scan import choose_k, data_settings, load_labels, open_model
    from logllama_tui.errors import BadInput
    from logllama_tui.feedback import model_fingerprint, read_feedback
    from logllama_tui.pipeline import collect_sequences
    from logllama_tui.rl import feedback_labels, finetune, position_labels, select_rl_sequences
    from logllama_tui.rl_state import RL_SCALARS, resumable

    if kwargs["episodes"] <= 0:
        raise BadInput(f"--episodes {kwargs['episodes']}: RL needs at least 1 episode (e.g. --episodes 10)")
    if kwargs["labels"] and kwargs["feedback"]:
        raise BadInput("give --labels or --feedback, not both: finetune on one source of labels at a time")
    console = Console(stderr=True)
    paths = list(data)
    out = out_path(kwargs["out"])
    if out.exists() and not (out / "logllama.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out} exists and is not a logllama checkpoint; choose another name")
    if kwargs["resume"]:
        resumable(out)  # nothing to resume fails before the model and the data are read
    elif (out / "logllama.json").is_file():
        unfinished = (out / RL_SCALARS).is_file()
        click.echo(f"Note: {out} holds an {'unfinished run (--resume continues it)' if unfinished else 'existing model'}"
                   "; it is replaced when this run ends or is interrupted", err=True)
    marks = None
    if kwargs["feedback"]:
        read_feedback(kwargs["feedback"])  # a malformed file fails before the model loads
    ckpt = open_model(kwargs["model"], paths, kwargs["fmt"], kwargs["max_line_bytes"], kwargs["device"])
    if out.exists() and out.resolve() == ckpt.path.resolve():
        raise BadInput(f"--out {out} is the input model: finetuning never overwrites it; pick a new name")
    if kwargs["feedback"]:
        marks = read_feedback(kwargs["feedback"], model_fingerprint(ckpt.path),
                              ignore_other_models=kwargs["ignore_other_models"])
        if not marks:
            raise BadInput(f"{kwargs['feedback']} holds no marks for this model; mark lines in "
                           "`logllama tail --model ...` first")
    k, how = choose_k(kwargs["k"], ckpt.parser.vocab.n_keys, ckpt.meta)
    fmt, window_cfg = data_settings(ctx, kwargs, ckpt.meta)
    labels = load_labels(kwargs["labels"])
    t0 = time.perf_counter()
    with console.status("Reading and parsing..."):
        seqs = collect_sequences(paths, fmt, ckpt.parser, window_cfg, labels, learn=False,
                                 reader=options.reader_config(kwargs),
                                 notice=lambda m: console.print(m, style="dim", markup=False,
                                                                 highlight=False))
    if not seqs:
        raise BadInput(f"no sequences in {', '.join(paths)}: the files hold no log lines we could window")
    if marks is not None:
        match = feedback_labels(seqs, marks)
        if not match.sequences:
            raise BadInput(f"none of the {len(marks)} marks in {kwargs['feedback']} points at a line "
                           f"of {', '.join(paths)} (same file, line number and text); give the "
                           "files the marks were made on")
        rl_seqs, rl_labels = match.sequences, match.labels
        console.print(f"{match.matched} marks matched, {match.unmatched} not found in the data",
                      highlight=False)
    else:
        if all(s.label is None for s in seqs):
            raise BadInput(NO_LABELS)
        rl_seqs = select_rl_sequences(seqs, ckpt.meta, kwargs["rl_fraction"], kwargs["seed"])
        if not rl_seqs:
            raise BadInput("every labelled sequence was used to train or validate the model; give "
                           "other labelled data for RL")
        rl_labels = [position_labels(s) for s in rl_seqs]
    n_anom = sum(1 for s in rl_seqs if s.label)
    console.print(f"{len(seqs)} sequences read in {time.perf_counter() - t0:.1f} s; RL on "
                  f"{len(rl_seqs)} ({n_anom} anomalous), K = {k} ({how})", highlight=False)
    if marks is None and n_anom == 0:
        console.print("[yellow]Warning:[/yellow] no anomalous sequence in the RL share: the reward "
                      "only pulls normal keys into the Top-K", highlight=False)
    cfg = RLConfig(episodes=kwargs["episodes"], k=str(k), entropy_coef=kwargs["entropy_coef"],
                   reward_clip=kwargs["reward_clip"], gamma=kwargs["gamma"], lr=kwargs["lr"],
                   seed=kwargs["seed"], rl_fraction=kwargs["rl_fraction"], action=kwargs["action"],
                   baseline=kwargs["baseline"], batch_size=kwargs["batch_size"],
                   anomalous_hit_reward=kwargs["anomalous_hit_reward"],
                   anomalous_focus=kwargs["anomalous_focus"])

    def progress(st: Any) -> None:
        console.print(f"episode {st.episode}/{st.episodes}: reward {st.mean_reward:+.3f}, "
                      f"Top-K hits normal {st.hit_normal:.3f} anomalous {st.hit_anomalous:.3f}, "
                      f"entropy {st.entropy:.3f}, {st.positions:,} keys in {st.seconds:.1f} s",
                      highlight=False)

    import signal

    def _sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # reported like Ctrl+C: "Interrupted.", status 130

    def interrupted(path: Any) -> None:
        console.print(f"Interrupted: the run so far is in {path}; continue it with --resume "
                      f"--out {path}", highlight=False, markup=False, soft_wrap=True)

    old_handler = signal.signal(signal.SIGTERM, _sigterm)  # the episodes save first (rl.run_episodes)
    try:
        result = finetune(ckpt, rl_seqs, cfg, out, progress=progress, labels=rl_labels,
                          resume=kwargs["resume"], on_interrupt=interrupted)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    click.echo(f"Saved finetuned model to {result.path} (from {ckpt.path}; {len(rl_seqs)} RL "
               f"sequences recorded for eval to exclude)")
    click.echo(f"  compare: logllama eval --compare {ckpt.path} {result.path} {' '.join(paths)}"
               + (f" --labels {kwargs['labels']}" if kwargs["labels"] else ""))
