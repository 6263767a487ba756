"""Admin endpoints' key, schemas and the service's privacy state; logs without raw ids.

The admin key (``SHOPREC_ADMIN_KEY`` or the file named by ``SHOPREC_ADMIN_KEY_FILE``, header
``X-Admin-Key``) is separate from the marketers' API key; both are compared in constant time
(``serving.propensity.key_matches``) and never logged. Without an admin key the admin
endpoints answer 503. Shopper ids reach the logs only as keyed hashes (``ps_…``,
features/privacy.py); a filter on the server's log handlers also masks the input values that
pydantic quotes in validation tracebacks.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field, StringConstraints

from features.privacy import ForgetList, ForgetReport, forget_user
from serving.propensity import key_matches
from serving.reload import TAG_PATTERN
from serving.schemas import Id, _Strict

ADMIN_KEY_ENV, ADMIN_KEY_FILE_ENV = "SHOPREC_ADMIN_KEY", "SHOPREC_ADMIN_KEY_FILE"
ADMIN_HEADER = "X-Admin-Key"
CANONICAL_ENV, DEFAULT_CANONICAL = "SHOPREC_CANONICAL_DIR", "data/canonical"
REFRESH_EVERY_S = 1.0  # how often the service looks for additions by `shoprec forget-user`
log = logging.getLogger("shoprec.admin")
requests_log = logging.getLogger("shoprec.requests")

Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN, max_length=128)]


class ReloadRequest(_Strict):
    model: Optional[Tag] = Field(None, description="BentoML tag to load (e.g. shoprec-recommender:abc123); "
                                                   "default: the configured one, shoprec-recommender:latest")


class ReloadAnswer(BaseModel):
    status: Literal["loaded", "unchanged", "refused"]
    serving: Optional[str] = Field(description="the model tag serving now")
    model_version: Optional[str] = Field(description="its registry version")
    detail: str


class ForgetRequest(_Strict):
    user_id: Id = Field(description="the shopper's id as the shop knows it")


class ForgetAnswer(BaseModel):
    pseudonym: str = Field(description="the keyed hash the logs and the forgotten list use")
    events_removed: int
    canonical_rows_removed: dict[str, int]


def admin_key_from_env(environ=os.environ) -> bytes | None:
    key = environ.get(ADMIN_KEY_ENV)
    if not key and environ.get(ADMIN_KEY_FILE_ENV):
        try:
            key = Path(environ[ADMIN_KEY_FILE_ENV]).read_text(encoding="utf-8")
        except OSError as e:
            log.error("cannot read the admin key file named by %s (%s): admin endpoints are disabled",
                      ADMIN_KEY_FILE_ENV, type(e).__name__)
            return None
    key = (key or "").strip()
    return key.encode("utf-8") if key else None


class AdminGate:
    def __init__(self, key: bytes | None):
        self._key = key

    def refusal(self, headers) -> tuple[int, str] | None:
        """(status, message) when the request may not use an admin endpoint; None when it may."""
        if self._key is None:
            return 503, f"admin endpoints are disabled: the server has no admin key (set {ADMIN_KEY_ENV} or {ADMIN_KEY_FILE_ENV})"
        if not key_matches(self._key, headers.get(ADMIN_HEADER)):
            return 401, f"missing or invalid admin key (header {ADMIN_HEADER})"
        return None


class ServicePrivacy:
    """Who is forgotten, as the service sees it: its own forgets at once, those of
    ``shoprec forget-user`` within ``REFRESH_EVERY_S``."""

    def __init__(self, forgotten: ForgetList, canonical_dir: Path | None):
        self.forgotten = forgotten
        self.canonical_dir = canonical_dir
        self._checked = time.monotonic()
        self._refresh_lock = threading.Lock()

    @classmethod
    def from_env(cls, environ=os.environ) -> "ServicePrivacy":
        return cls(ForgetList.open(environ=environ, create_key=True), Path(environ.get(CANONICAL_ENV) or DEFAULT_CANONICAL))

    def is_forgotten(self, user_id: str) -> bool:
        self._refresh_if_due()
        return self.forgotten.contains(user_id)

    def hide(self, user_ids) -> list[bool]:
        """Which of ``user_ids`` are forgotten (for lists such as the churn list)."""
        self._refresh_if_due()
        return self.forgotten.mask(list(user_ids)).tolist()

    def _refresh_if_due(self) -> None:
        now = time.monotonic()
        if now - self._checked > REFRESH_EVERY_S and self._refresh_lock.acquire(blocking=False):
            try:
                self._checked = now
                self.forgotten.refresh()
            except Exception as e:  # keep what we have; say so
                log.error("cannot re-read the forgotten list: %s", e)
            finally:
                self._refresh_lock.release()

    def pseudonym(self, user_id: str) -> str:
        return self.forgotten.pseudonymizer.short(user_id)

    def forget(self, user_id: str, event_store) -> ForgetReport:
        report = forget_user(user_id, self.forgotten, self.canonical_dir, event_store)
        log.info("%s", report.summary())
        return report

    def log_request(self, endpoint: str, user_id: str, source: str, n: int) -> None:
        if requests_log.isEnabledFor(logging.INFO):
            requests_log.info("%s shopper=%s source=%s items=%d", endpoint, self.pseudonym(user_id), source, n)


# -- logs -----------------------------------------------------------------------------------
# pydantic writes "[type=..., input_value=<repr>, input_type=...]": everything between goes
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=)")
_INPUT_VALUE_TO_EOL = re.compile(r"input_value=(?!<redacted>)[^\n]*")


def redact(text: str) -> str:
    return _INPUT_VALUE_TO_EOL.sub("input_value=<redacted>", _INPUT_VALUE.sub("input_value=<redacted>", text))


class RedactInputs(logging.Filter):
    """Masks the request values that pydantic quotes in validation errors (they may be
    shopper ids or keys), in the message and in the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if "input_value=" in message:
            record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and "input_value=" in record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging() -> None:
    """Our loggers at INFO (the server's root is at WARNING) and the redaction filter on
    every handler the server configured."""
    logging.getLogger("shoprec").setLevel(logging.INFO)
    loggers = [logging.getLogger()] + [x for x in list(logging.root.manager.loggerDict.values())
                                       if isinstance(x, logging.Logger)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, RedactInputs) for f in handler.filters):
                handler.addFilter(RedactInputs())
