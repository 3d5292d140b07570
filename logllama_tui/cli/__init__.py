"""The `logllama` command: a thin click layer over the library.

Each subcommand lives in its own module and imports torch/transformers/textual only inside its
function body, so `logllama --help` and every `--help` answer without paying for them.
"""

from __future__ import annotations

import sys

import click

from logllama_tui import __version__
from logllama_tui.errors import LogLlamaError


class _Group(click.Group):
    """Turns a LogLlamaError anywhere below into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except LogLlamaError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logllama")
def cli() -> None:
    """logllama: learn what normal looks like in your logs, then point at what breaks it.

    \b
    Quick start:
      logllama scan sample_logs/hdfs_sample.log      # score a file with the shipped model
      logllama demo                                  # watch anomalies light up live
      logllama train /var/log/syslog* --out mysys    # learn your own logs
      logllama tail /var/log/syslog --model mysys    # follow and triage live
    """


def _register() -> None:
    from logllama_tui.cli import commands  # noqa: F401  (imports each command module)

    for command in commands.ALL:
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="logllama")
