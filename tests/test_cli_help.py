"""Every command answers --help, fast, without importing torch, transformers or textual."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from logllama_tui.cli import cli

HEAVY = ("torch", "transformers", "textual")


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append(prefix + (name,))
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, prefix + (name,)))
    return found


def test_every_command_has_help_text() -> None:
    runner = CliRunner()
    commands = _all_commands(cli)
    assert len(commands) >= 5
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        command = cli
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        assert command.help and len(command.help.strip()) > 20, f"{path} has no help text"


def test_help_imports_no_heavy_module() -> None:
    commands = [" ".join(p) for p in _all_commands(cli)]
    script = (
        "import sys\n"
        "from logllama_tui.cli import cli\n"
        f"for path in {commands!r}:\n"
        "    try:\n"
        "        cli.main(args=[*path.split(), '--help'], standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_python_dash_m_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "logllama_tui", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "logllama" in out.stdout
