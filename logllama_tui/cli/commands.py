"""The list of subcommands. Each module must import only click and logllama_tui.config at top level."""

from __future__ import annotations

import importlib

import click

_MODULES = ["parse", "train", "scan", "evaluate", "finetune", "tail", "models", "demo"]


def _load() -> list[click.Command]:
    found: list[click.Command] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"logllama_tui.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"logllama_tui.cli.{name}":
                continue  # not written yet
            raise
        found.append(module.command)
    return found


ALL = _load()
