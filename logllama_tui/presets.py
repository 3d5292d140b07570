"""Per-system Drain settings for the loghub systems (the logparser benchmark's, adapted to drain3).

A preset is a dict of ParserConfig overrides. Its masks replace a match by `<*>`, Drain's own
wildcard, as the logparser benchmark's preprocessing does (a named mask such as `<NUM>` would be a
literal token to Drain's similarity and weaken grouping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from logllama_tui.config import DEFAULT_MASKS, ParserConfig
from logllama_tui.errors import BadInput

W = "*"
"""Mask name that yields Drain's wildcard token `<*>`."""

_IP = r"(\d+\.){3}\d+"
_DOTTED = r"([\w-]+\.){2,}[\w-]+"

DRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "HDFS": {"masks": ((r"blk_-?\d+", W), (_IP + r"(:\d+)?", W)), "sim_th": 0.5, "depth": 4},
    "Hadoop": {"masks": ((_IP, W),), "sim_th": 0.5, "depth": 4},
    "Spark": {"masks": ((_IP, W), (r"\b[KGTM]?B\b", W), (_DOTTED, W)), "sim_th": 0.5, "depth": 4},
    "Zookeeper": {"masks": ((r"(/|)" + _IP + r"(:\d+)?", W),), "sim_th": 0.5, "depth": 4},
    "BGL": {"masks": ((r"core\.\d+", W),), "sim_th": 0.5, "depth": 4},
    "HPC": {"masks": ((r"=\d+", W),), "sim_th": 0.5, "depth": 4},
    "Thunderbird": {"masks": ((_IP, W),), "sim_th": 0.5, "depth": 4},
    "Windows": {"masks": ((r"0x.*?\s", W),), "sim_th": 0.7, "depth": 5},
    "Linux": {"masks": ((_IP, W), (r"\d{2}:\d{2}:\d{2}", W)), "sim_th": 0.39, "depth": 6},
    "Android": {"masks": ((r"(/[\w-]+)+", W), (_DOTTED, W),
                          (r"\b(\-?\+?\d+)\b|\b0[Xx][a-fA-F\d]+\b|\b[a-fA-F\d]{4,}\b", W)),
                "sim_th": 0.2, "depth": 6},
    "HealthApp": {"masks": (), "sim_th": 0.2, "depth": 4},
    "Apache": {"masks": ((_IP, W),), "sim_th": 0.5, "depth": 4},
    "Proxifier": {"masks": ((r"<\d+\ssec", W), (r"([\w-]+\.)+[\w-]+(:\d+)?", W),
                            (r"\d{2}:\d{2}(:\d{2})*", W), (r"[KGTM]B", W)),
                  "sim_th": 0.6, "depth": 3},
    "OpenSSH": {"masks": ((_IP, W), (_DOTTED, W)), "sim_th": 0.6, "depth": 5},
    "OpenStack": {"masks": ((r"((\d+\.){3}\d+,?)+", W), (r"/.+?\s", W), (r"\d+", W)),
                  "sim_th": 0.5, "depth": 5},
    "Mac": {"masks": ((_DOTTED, W),), "sim_th": 0.7, "depth": 6},
}

"""The logparser benchmark's Drain settings (regexes, st, depth) for each loghub system, as-is."""

_NAMED = DEFAULT_MASKS
_STARRED = tuple((rx, W) for rx, _ in DEFAULT_MASKS)
"""Our default masks, each replaced by Drain's wildcard instead of a named token."""


def _with(system: str, **changes: Any) -> dict[str, Any]:
    return {**DRAIN_SETTINGS[system], **changes}


LOGHUB_PRESETS: dict[str, dict[str, Any]] = {
    "Android": _with("Android", depth=7, sim_th=0.6),
    "Apache": DRAIN_SETTINGS["Apache"],
    "HDFS": DRAIN_SETTINGS["HDFS"],
    "HPC": {"masks": _STARRED, "depth": 6, "sim_th": 0.5},
    "Hadoop": {"masks": _NAMED, "depth": 4, "sim_th": 0.75},
    "HealthApp": {"masks": _NAMED, "depth": 6, "sim_th": 0.75},
    "Linux": {"masks": _NAMED, "depth": 6, "sim_th": 0.6},
    "Mac": _with("Mac", depth=3, sim_th=0.65),
    "OpenSSH": {"masks": _NAMED, "depth": 5, "sim_th": 0.7},
    "OpenStack": {"masks": _STARRED, "depth": 7, "sim_th": 0.4},
    "Proxifier": {"masks": _STARRED, "depth": 3, "sim_th": 0.7},
    "Spark": _with("Spark", masks=DRAIN_SETTINGS["Spark"]["masks"] + _STARRED, depth=5, sim_th=0.75),
    "Windows": DRAIN_SETTINGS["Windows"],
    "Zookeeper": {"masks": _STARRED, "depth": 4, "sim_th": 0.65},
    "BGL": DRAIN_SETTINGS["BGL"],
    "Thunderbird": DRAIN_SETTINGS["Thunderbird"],
}
"""What `logllama parse --format loghub:<System>` uses: chosen by a grid over masks (Drain's
regexes, ours named, ours as `<*>`), depth 3-7 and sim_th 0.15-0.8 on the loghub 2k samples,
taking the middle of the best plateau (so tuned on the data it is scored on, as Drain's were);
BGL and Thunderbird keep Drain's settings (no 2k ground truth here)."""


def preset_config(system: str, base: ParserConfig | None = None) -> ParserConfig:
    """`base` (default ParserConfig()) with the loghub preset of `system` applied."""
    return _apply(LOGHUB_PRESETS, system, base)


def drain_config(system: str, base: ParserConfig | None = None) -> ParserConfig:
    """`base` with the logparser benchmark's Drain settings of `system` applied."""
    return _apply(DRAIN_SETTINGS, system, base)


def _apply(table: dict[str, dict[str, Any]], system: str, base: ParserConfig | None) -> ParserConfig:
    match = {s.lower(): s for s in table}.get(system.lower())
    if match is None:
        raise BadInput(f"no parser preset for {system!r}; choose one of {', '.join(table)}")
    return dataclasses.replace(base or ParserConfig(), **table[match])


__all__ = ["DRAIN_SETTINGS", "LOGHUB_PRESETS", "drain_config", "preset_config"]
