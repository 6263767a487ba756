"""``shoprec keys ...``: create, list and revoke API keys; print the access log of customer data.

Registered in training/cli.py with ``app.add_typer(keys_app, name="keys")``. The store and the log
are the files a running service reads (``SHOPREC_KEYS_FILE``, ``SHOPREC_ACCESS_LOG``; features/settings.py);
a server sees a created or revoked key within ``SHOPREC_KEYS_REFRESH_S`` (2 s) without a restart.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from training.cli_errors import fail, load_settings

keys_app = typer.Typer(help="API keys (scopes: storefront, marketing, admin) and the access log of customer data.",
                       no_args_is_help=True)


@keys_app.command("create")
def create(
    scope: str = typer.Option(..., "--scope", help="storefront (recommendations, events) | marketing (propensity, "
                                                   "churn risk, the marketers' page) | admin (reload, forget)"),
    name: Optional[str] = typer.Option(None, "--name", help="a name to list, revoke and audit it by [default: <scope>-<random>]"),
) -> None:
    """Create a key; it is printed once, as the last line (only its hash is stored).

    Example: KEY=$(shoprec keys create --scope storefront --name web-shop | tail -1)
    """
    from features.key_store import KeyStore, KeyStoreError

    settings = load_settings()
    try:
        record, key = KeyStore(settings.keys_file).create(scope, name)
    except KeyStoreError as e:
        fail(str(e))
    typer.echo(f"created {record.scope} key {record.name!r} in {settings.keys_file} "
               "(a running server accepts it within seconds); it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def list_keys(revoked: bool = typer.Option(False, "--revoked", help="also show revoked keys")) -> None:
    """The keys: name, scope, created, and revoked (never the keys themselves)."""
    from features.key_store import KeyStore, KeyStoreError
    from features.settings import ENV_KEY_SCOPES

    settings = load_settings()
    try:
        keys = KeyStore(settings.keys_file).read()
    except KeyStoreError as e:
        fail(str(e))
    rows = [(k.name, k.scope, k.created_at, k.revoked_at or "") for k in keys if revoked or k.active]
    rows += [(f"SHOPREC_{field.upper()}", scope, "(environment)", "") for field, scope in ENV_KEY_SCOPES.items()
             if settings.env_key(field)]
    if not rows:
        typer.echo(f"no keys in {settings.keys_file}: `shoprec keys create --scope storefront` makes one")
        return
    width = max(len("name"), *(len(r[0]) for r in rows))
    typer.echo(f"{'name':<{width}}  {'scope':<10}  {'created':<25}  revoked")
    for name, scope, created, gone in rows:
        typer.echo(f"{name:<{width}}  {scope:<10}  {created:<25}  {gone}")


@keys_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="the key's name (see `shoprec keys list`)")) -> None:
    """Revoke a key: a running server refuses it (401) within seconds; its page sessions end too."""
    from features.key_store import KeyStore, KeyStoreError

    settings = load_settings()
    try:
        record = KeyStore(settings.keys_file).revoke(name)
    except KeyStoreError as e:
        fail(str(e))
    typer.echo(f"revoked {record.scope} key {record.name!r} at {record.revoked_at}")


def _since(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected a date or time in ISO 8601, e.g. 2025-03-01 or 2025-03-01T09:00")
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@keys_app.command("audit")
def audit(
    since: str = typer.Option(..., "--since", help="from this date or time (ISO 8601; no zone = UTC)"),
    key: Optional[str] = typer.Option(None, "--key", help="only this key's calls"),
) -> None:
    """Who read customer data: every marketing- and admin-scope call since DATE (time, key name, endpoint,
    status, customers in the answer), then the totals per key.

    Example: shoprec keys audit --since 2025-03-01
    """
    from features.access_log import AccessLog

    settings = load_settings()
    entries = [e for e in AccessLog(settings.access_log).read(_since(since)) if key is None or e.key == key]
    if not entries:
        typer.echo(f"no recorded calls since {since} in {settings.access_log}")
        return
    typer.echo(f"{'time':<29}  {'key':<20}  {'scope':<9}  {'endpoint':<26}  status  customers")
    totals: dict[str, list[int]] = {}
    for e in entries:
        typer.echo(f"{e.at:<29}  {e.key:<20}  {e.scope:<9}  {e.endpoint:<26}  {e.status:>6}  {e.customers:>9}")
        t = totals.setdefault(e.key, [0, 0])
        t[0] += 1
        t[1] += e.customers
    for name, (calls, customers) in totals.items():
        typer.echo(f"total {name}: {calls} calls, {customers} customer records returned")


def example_ids(bundle_dir: Path) -> tuple[str, str]:
    """A shopper of the bundle with the most purchases and the first item they bought: example calls that
    show the model's answer (with its reasons), not the fallback of a shopper who only browsed."""
    import numpy as np

    with np.load(bundle_dir / "bought.npz", allow_pickle=False) as bought:
        indptr = bought["indptr"]
        user = int(np.argmax(np.diff(indptr)))
        item = int(bought["indices"][indptr[user]]) if indptr[user + 1] > indptr[user] else 0
    with np.load(bundle_dir / "users.npz", allow_pickle=False) as users, \
            np.load(bundle_dir / "items.npz", allow_pickle=False) as items:
        return str(users["ids"][user]), str(items["ids"][item])


def example_calls(host: str, port: int, user_id: str = "u000001", item_id: str = "i00001") -> str:
    """For ``shoprec serve`` (``make run``): on the first run (no active storefront or marketing key in the
    store), create one of each and show them in the example calls; later runs show where to put yours.
    ``user_id`` and ``item_id`` fill the examples (``example_ids`` of the served bundle)."""
    from features.key_store import KeyStore

    settings = load_settings()
    store = KeyStore(settings.keys_file)
    active = {k.scope for k in store.read() if k.active}
    made = {scope: store.create(scope, f"make-run-{scope}")[1] for scope in ("storefront", "marketing") if scope not in active}
    shop = made.get("storefront", "$STOREFRONT_KEY")
    market = made.get("marketing", "$MARKETING_KEY")
    base = f"http://{host}:{port}"
    names = [k.name for k in store.read() if k.active and k.scope == "marketing"]  # the page's sign-in asks for one
    names = sorted(names, key=lambda n: n != "make-run-marketing")
    user, item = json.dumps(user_id), json.dumps(item_id)
    auth = f"-H \"Authorization: Bearer {shop}\" -H 'content-type: application/json'"
    lines = []
    if made:
        lines.append(f"\nCreated {', '.join(made)} key(s) in {settings.keys_file} (shown only now; "
                     "`shoprec keys list` names them, `shoprec keys create` makes more):")
        lines += [f"  {scope:<10} {key}" for scope, key in made.items()]
    else:
        lines.append("\nKeys: use yours (STOREFRONT_KEY=..., MARKETING_KEY=...); `shoprec keys create --scope S` makes one.")
    lines += [
        "\nExample calls:",
        f"  curl -s -X POST {base}/recommend {auth} -d '{{\"user_id\": {user}, \"k\": 5}}'",
        f"  curl -s -X POST {base}/recommend {auth} -d '{{\"user_id\": \"someone-new\"}}'",
        f"  curl -s -X POST {base}/similar_items {auth} -d '{{\"item_id\": {item}, \"k\": 5}}'",
        f"  curl -s -X POST {base}/churn_risk -H \"Authorization: Bearer {market}\" -H 'content-type: application/json' "
        "-d '{\"top_n\": 5}'",
        f"  curl -s {base}/readyz ; open {base}/ for the API docs, {base}/marketing/ for the marketers' page "
        + (f"(key name {names[0]})\n" if names else "(a marketing key's name and the key)\n"),
    ]
    return "\n".join(lines)
