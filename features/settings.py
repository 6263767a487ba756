"""The service's and the key commands' configuration: one typed object read from the environment.

Every field has a default and an environment variable ``SHOPREC_<FIELD>`` (e.g. ``SHOPREC_KEYS_FILE``);
a bad value fails at startup with the variable's name. ``Settings()`` reads the environment when it
is called, never at import time.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("shoprec.settings")

# the scopes that the old single-key variables stand for (each one key of its scope, named after its variable)
ENV_KEY_SCOPES = {"storefront_key": "storefront", "api_key": "marketing", "admin_key": "admin"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPREC_", extra="ignore", frozen=True)

    # -- where things are ------------------------------------------------------------------------
    events_url: str = Field("sqlite:///data/events.db", description="event store: sqlite:///PATH or redis://HOST:PORT/DB")
    model: str = Field("shoprec-recommender:latest", description="BentoML tag of the recommender to serve")
    workers: int = Field(1, ge=1, le=64, description="worker processes (one per core in production)")
    reload_poll_s: Optional[float] = Field(None, ge=0, description="look for a new champion every N s "
                                                                    "(default: 10 with several workers, else off)")
    canonical_dir: Path = Field(Path("data/canonical"), description="canonical tables that /admin/forget rewrites")
    replica: Optional[str] = Field(None, description="this replica's name in every answer's X-Served-By header "
                                                     "(default: the host name)")

    # -- drift monitoring (serving/monitoring.py, shoprec monitor) ------------------------------------
    monitor: bool = Field(True, description="compare live traffic with the training data (drift gauges, observation log)")
    monitor_dir: Path = Field(Path("data/monitor"), description="observation log and references; shared by replicas")
    drift_psi_threshold: float = Field(0.2, gt=0, description="PSI above this: the quantity is drifting")
    drift_js_threshold: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance above this: drifting")
    drift_window: int = Field(1000, ge=10, le=1_000_000, description="live values per quantity the service compares")
    drift_min_observations: int = Field(500, ge=1, description="no figure before this many live values (fewer: "
                                                                 "sampling noise alone nears the JS threshold)")
    drift_every_s: float = Field(30.0, gt=0, description="evaluate and append to the observation log this often")

    # -- keys ------------------------------------------------------------------------------------
    keys_file: Path = Field(Path("data/keys/keys.json"), description="the key store (hashes only); shared by replicas")
    keys_refresh_s: float = Field(2.0, gt=0, le=10, description="a running server re-reads the key store this often")
    access_log: Path = Field(Path("data/keys/access.jsonl"),
                             description="record of every marketing- and admin-scope call (customer data access)")
    sessions_file: Path = Field(Path("data/keys/sessions.json"), description="the marketers' page sign-ins")
    storefront_key: Optional[SecretStr] = Field(None, description="one storefront key from the environment")
    storefront_key_file: Optional[Path] = None
    api_key: Optional[SecretStr] = Field(None, description="one marketing key from the environment (old name)")
    api_key_file: Optional[Path] = None
    admin_key: Optional[SecretStr] = Field(None, description="one admin key from the environment")
    admin_key_file: Optional[Path] = None

    # -- abuse resistance (limits' notation: "N/second", "N per 15 minutes", ...) ---------------------
    rate_per_key: str = Field("2000/second", description="requests per key, every keyed endpoint")
    rate_events_per_key: str = Field("300/second", description="events accepted per key on /events")
    rate_events_per_shopper: str = Field("120/minute", description="events accepted per shopper on /events")
    login_failures: str = Field("5/15 minutes", description="failed sign-ins per account and per client address")
    limits_url: Optional[str] = Field(None, description="rate-limit counters: memory:// or redis://... "
                                                        "(default: the event store's Redis, else memory)")
    clock_skew_s: float = Field(300.0, ge=0, le=86_400, description="how far in the future an event's ts may be")

    @field_validator("rate_per_key", "rate_events_per_key", "rate_events_per_shopper", "login_failures")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as e:
            raise ValueError(f"not a rate limit (expected e.g. '100/second' or '5 per 15 minutes'): {e}") from e
        return value

    def env_key(self, field: str) -> str | None:
        """The key of ``field`` (e.g. ``api_key``), else the content of ``<field>_file``; None when
        neither is set or the file cannot be read (logged, never the key)."""
        value = getattr(self, field)
        if value is not None and value.get_secret_value().strip():
            return value.get_secret_value().strip()
        path = getattr(self, f"{field}_file")
        if path is None:
            return None
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as e:
            log.error("cannot read the key file named by SHOPREC_%s_FILE (%s): that key is disabled",
                      field.upper(), type(e).__name__)
            return None
        return text or None

    def rate_storage_url(self) -> str:
        if self.limits_url:
            return self.limits_url
        if self.events_url.startswith(("redis://", "rediss://", "unix://")):
            return self.events_url
        return "memory://"
