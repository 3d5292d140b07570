"""The list of subcommands. Each module must import only click and logllama_tui.config at top level."""

from __future__ import annotations

import importlib

import click

_MODULES = ["parse", "train", "scan", "evaluate", "finetune", "tail", "models", "demo"]

ALL: list[click.Command] = [
    importlib.import_module(f"logllama_tui.cli.{name}").command for name in _MODULES
]
