"""Admin endpoints' schemas and the service's privacy state; logs without raw ids or tracebacks of
client errors.

The admin endpoints need an admin-scope key (serving/auth.py). Shopper ids reach the logs only as
keyed hashes (``ps_…``, features/privacy.py); a filter on the server's log handlers also masks the
input values that pydantic quotes in validation errors, and a request the client got wrong (400) is
logged as one line naming the fields, not as a stack trace.
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field, StringConstraints

from features.privacy import ForgetList, ForgetReport, forget_user
from serving.reload import TAG_PATTERN
from serving.schemas import Id, _Strict

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
    experiment_rows_removed: int = Field(0, description="A/B tests' exposures and outcomes of the shopper removed")


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
        """Who was answered what, by pseudonym: on the request's access log line when there is one (see
        ``request_notes``), else a line of its own."""
        if requests_log.isEnabledFor(logging.INFO):
            note = f"{endpoint} shopper={self.pseudonym(user_id)} source={source} items={n}"
            if (notes := _request_notes.get()) is not None:
                notes.append(note)
            else:
                requests_log.info("%s", note)


# -- one log line per request: the privacy note rides on BentoML's access log line ----------------------------
ACCESS_LOGGER = "bentoml.access"  # BentoML's access log: one line per request, written after the answer is sent
_request_notes: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("shoprec_request_notes", default=None)


class request_notes:
    """Around one request (ASGI middleware, serving/auth.py): the endpoint's ``log_request`` notes are kept, the
    access log line of the request takes them (``NotesOnAccessLine``), and whatever no access line took (access
    log off, no answer sent) is logged on its own at the end, so every note is logged once. A second log record
    per request cost ~3% of a busy worker (py-spy)."""

    def __enter__(self) -> list[str]:
        self._notes: list[str] = []
        self._token = _request_notes.set(self._notes)  # a list: a worker thread's copy of the context shares it
        return self._notes

    def __exit__(self, *exc) -> None:
        _request_notes.reset(self._token)
        for note in self._notes:
            requests_log.info("%s", note)
        self._notes.clear()


class NotesOnAccessLine(logging.Filter):
    """On BentoML's access logger: appends the request's notes to its access line (and takes them); a value over 200
    characters (a made-up path) is cut to its start and length."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):  # a made-up 60 KB path would be written whole
            record.args = tuple(f"{a[:200]}... ({len(a):,} characters)" if isinstance(a, str) and len(a) > 200 else a
                                for a in record.args)
        notes = _request_notes.get()
        if notes and isinstance(record.args, tuple):
            record.msg, record.args = f"{record.msg} %s", (*record.args, " ".join(notes))
            notes.clear()
        return True


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
        if record.name == ACCESS_LOGGER and not record.exc_info:
            return True  # address, path, status, sizes, latency and pseudonyms: no request values
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


class OneLineClientErrors(logging.Filter):
    """BentoML logs a request that failed validation (or another 4xx it raised) with the whole
    traceback; a client's mistake is not the server's: one line with the fields and reasons instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                               for e in error.errors(include_input=False, include_context=False)[:5])
            summary = f"400 {error.error_count()} validation error(s): {fields}"
        elif error is not None and 400 <= int(getattr(getattr(error, "error_code", 500), "value", 500)) < 500:
            summary = f"{int(error.error_code.value)} {type(error).__name__}: {str(error)[:200]}"
        else:
            return True
        record.msg, record.args = f"{record.getMessage().replace('Exception on', 'client error on', 1)}: {redact(summary)}", ()
        record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


CLIENT_ERROR_LOGGER = "bentoml._internal.server.http_app"  # where BentoML's log_exception writes


def configure_logging() -> None:
    """Our loggers at INFO (the server's root is at WARNING), the redaction filter on every handler
    the server configured, and client errors in one line."""
    logging.getLogger("shoprec").setLevel(logging.INFO)
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, NotesOnAccessLine) for f in access.filters):
        access.addFilter(NotesOnAccessLine())
    client_errors = logging.getLogger(CLIENT_ERROR_LOGGER)
    if not any(isinstance(f, OneLineClientErrors) for f in client_errors.filters):
        client_errors.addFilter(OneLineClientErrors())
    loggers = [logging.getLogger()] + [x for x in list(logging.root.manager.loggerDict.values())
                                       if isinstance(x, logging.Logger)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, RedactInputs) for f in handler.filters):
                handler.addFilter(RedactInputs())
