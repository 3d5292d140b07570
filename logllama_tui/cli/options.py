"""Option sets shared by several commands, as decorator factories (sqlite-utils style).

Defaults come from logllama_tui.config; each factory also has a `*_from_kwargs` twin that turns
the parsed values back into the config dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from logllama_tui.config import DetectConfig, ParserConfig, ReaderConfig, WindowConfig

F = Callable[..., Any]


def _stack(*decorators: F) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def input_options() -> Callable[[F], F]:
    """--format, --max-line-bytes and the parser (Drain) settings."""
    p, r = ParserConfig(), ReaderConfig()
    return _stack(
        click.option(
            "--format", "fmt", default="auto", show_default=True, metavar="FORMAT",
            help="hdfs | bgl | thunderbird | syslog | raw | structured | deeplog | auto, or a "
            "loghub format string such as '<Date> <Time> <Level> <Component>: <Content>'.",
        ),
        click.option("--max-line-bytes", type=click.IntRange(min=256), default=r.max_line_bytes,
                     show_default=True, help="Longer lines are cut (and counted), never dropped."),
        click.option("--sim-th", type=click.FloatRange(0.0, 1.0), default=p.sim_th,
                     show_default=True, help="Drain similarity threshold."),
        click.option("--depth", type=click.IntRange(min=3), default=p.depth, show_default=True,
                     help="Drain tree depth."),
        click.option("--max-children", type=click.IntRange(min=2), default=p.max_children,
                     show_default=True, help="Drain: most children per tree node."),
        click.option("--no-masks", is_flag=True, help="Do not mask IPs, numbers, hex, ids, paths."),
    )


def reader_config(kwargs: dict[str, Any]) -> ReaderConfig:
    return ReaderConfig(max_line_bytes=kwargs["max_line_bytes"])


def parser_config(kwargs: dict[str, Any]) -> ParserConfig:
    base = ParserConfig()
    return ParserConfig(
        sim_th=kwargs["sim_th"],
        depth=kwargs["depth"],
        max_children=kwargs["max_children"],
        masks=() if kwargs.get("no_masks") else base.masks,
    )


def window_options() -> Callable[[F], F]:
    """How keys are grouped into sequences."""
    w = WindowConfig()
    return _stack(
        click.option("--window", "window_mode", type=click.Choice(["auto", "session", "time", "count"]),
                     default=w.mode, show_default=True,
                     help="Group by session id, by time window or by count window."),
        click.option("--session-regex", default=w.session_regex, show_default=True,
                     help="Session id pattern (a line naming two sessions joins both)."),
        click.option("--session-timeout", type=click.FloatRange(min=0.0, min_open=True),
                     default=w.session_timeout, show_default=True,
                     help="Seconds after which an idle session is closed."),
        click.option("--window-seconds", type=click.FloatRange(min=0.0, min_open=True),
                     default=w.window_seconds, show_default=True, help="Time window length."),
        click.option("--step-seconds", type=click.FloatRange(min=0.0, min_open=True),
                     default=None, help="Time window hop [default: the window length]."),
        click.option("--window-size", type=click.IntRange(min=1), default=w.window_size,
                     show_default=True, help="Keys per count window."),
        click.option("--step", type=click.IntRange(min=1), default=None,
                     help="Count window hop [default: the window size]."),
    )


def window_config(kwargs: dict[str, Any]) -> WindowConfig:
    return WindowConfig(
        mode=kwargs["window_mode"],
        session_regex=kwargs["session_regex"],
        session_timeout=kwargs["session_timeout"],
        window_seconds=kwargs["window_seconds"],
        step_seconds=kwargs["step_seconds"] or kwargs["window_seconds"],
        window_size=kwargs["window_size"],
        step=kwargs["step"] or kwargs["window_size"],
    )


def labels_option() -> Callable[[F], F]:
    return click.option(
        "--labels", type=click.Path(dir_okay=False), default=None,
        help="Session labels, a BlockId,Label CSV (loghub's anomaly_label.csv).",
    )


def model_option(required: bool = False) -> Callable[[F], F]:
    return click.option(
        "--model", "-m", "model", required=required, default=None, metavar="NAME_OR_DIR",
        help="A model name (see `logllama models`) or a checkpoint directory"
        + ("." if required else " [default: the shipped model for the format]."),
    )


def device_option() -> Callable[[F], F]:
    return click.option(
        "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
        show_default=True, help="Where the model runs.",
    )


def k_option() -> Callable[[F], F]:
    d = DetectConfig()
    return _stack(
        click.option("--k", "k", default=None, metavar="K",
                     help="Top-K: a count, a fraction of the training keys (0.5 is the paper's), "
                     "or auto [default: the checkpoint's]."),
        click.option("--target-fpr", type=click.FloatRange(0.0, 1.0, min_open=True),
                     default=d.target_fpr, show_default=True,
                     help="With --k auto: the false-positive rate aimed at on validation data."),
    )
