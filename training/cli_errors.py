"""How a ``shoprec`` subcommand stops on a problem: ``error: <what is wrong>`` in red on stderr and
exit status 2; and the ``SHOPREC_*`` settings, or that error naming the bad variable.

Shared by the subcommand modules (cli_keys, cli_batch, cli_propensity, cli_value, cli_privacy,
experiments/cli); training/cli.py's own ``_fail`` also prints a remedy line.
"""
from __future__ import annotations

import typer


def fail(msg: str) -> None:
    """Print ``error: msg`` and exit 2."""
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(2)


def load_settings():
    """``features.settings.Settings()`` from the environment; a bad value exits 2 with its message."""
    from pydantic import ValidationError

    from features.settings import Settings

    try:
        return Settings()
    except ValidationError as e:
        fail(f"bad SHOPREC_* setting: {e}")
