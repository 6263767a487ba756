"""``shoprec forget-user ID``: erase a shopper (GDPR art. 17 / PIPL art. 47).

Registered in training/cli.py with ``app.command("forget-user")(forget_user_command)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from training.cli_errors import fail


def forget_user_command(
    user_id: str = typer.Argument(..., help="the shopper's id as the shop knows it"),
    canonical: Path = typer.Option(Path("data/canonical"), "--canonical",
                                   help="canonical tables to rewrite without them (an ingest output folder)"),
    events_url: str = typer.Option("sqlite:///data/events.db", "--events-url", envvar="SHOPREC_EVENTS_URL",
                                   help="the service's real-time event store (sqlite:///PATH or redis://HOST:PORT/DB)"),
    privacy_dir: Optional[Path] = typer.Option(None, "--privacy-dir", envvar="SHOPREC_PRIVACY_DIR",
                                     help="folder of the forgotten list and the pseudonymisation key [default: data/privacy]"),
) -> None:
    """Forget a shopper: add them to the forgotten list (ingest rejects their rows from now on, a running
    service answers them with the fallback only and drops them from the churn list within a second),
    rewrite the canonical tables without them and delete their real-time events. Safe to rerun.

    Example: shoprec forget-user 17850
    """
    from features.event_store import open_event_store
    from features.privacy import ForgetList, forget_user

    user_id = user_id.strip()
    if not user_id:
        fail("give a non-empty user id")
    try:
        forgotten = ForgetList.open(privacy_dir, create_key=True)
        store = open_event_store(events_url)
        try:
            report = forget_user(user_id, forgotten, canonical, store)
        finally:
            store.close()
    except Exception as e:  # PrivacyError, an unreachable event store, a read-only folder: say it, exit 2
        fail(f"{e} (rerun when fixed: forgetting is idempotent)")
    typer.echo(report.summary())
    typer.echo("their rows in raw files are rejected as 'forgotten user' by every later ingest")
