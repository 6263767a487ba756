"""Both event stores pass the same tests: durable append, recent, forget, export, restart."""
import contextlib

import pytest

from features.event_store import Event, open_event_store
from tests.redis_server import redis_server


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    """A factory that (re)opens the same store; for Redis, a real server that can be restarted."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/events.db"
        yield lambda: contextlib.nullcontext(open_event_store(url))
    else:
        from tests.server import free_port

        port = free_port()

        @contextlib.contextmanager
        def opened():
            with redis_server(tmp_path, port) as url:
                store = open_event_store(url)
                yield store
                store.close()

        yield opened


def test_append_and_recent(backend):
    with backend() as store:
        assert store.append("u1", [Event("i1", "view", "2024-01-01T00:00:00"), Event("i2", "purchase", "2024-01-01T00:01:00")]) == 2
        store.append("u2", [Event("i3", "cart", "2024-01-01T00:00:00")])
        assert store.recent("u1") == [("i1", "view"), ("i2", "purchase")]
        assert store.recent("u1", since=4e9) == []  # nothing received after that time
        assert store.recent("nobody") == []


def test_forget_removes_everything_of_a_shopper(backend):
    with backend() as store:
        store.append("u1", [Event("i1", "view", "t")])
        store.append("u2", [Event("i2", "view", "t")])
        assert store.forget("u1") == 1
        assert store.recent("u1") == [] and store.recent("u2") == [("i2", "view")]


def test_export_is_a_contract_events_table(backend):
    with backend() as store:
        store.append("u1", [Event("i1", "view", "2024-01-01T00:00:00", "s9")])
        df = store.export()
        assert list(df.columns) == ["ts", "user_id", "session_id", "event_type", "item_id"]
        assert df.iloc[0].to_dict() == {"ts": "2024-01-01T00:00:00", "user_id": "u1", "session_id": "s9",
                                        "event_type": "view", "item_id": "i1"}


def test_acknowledged_events_survive_a_restart(backend):
    with backend() as store:
        store.append("u1", [Event("i1", "purchase", "t")])
    with backend() as store:
        assert store.recent("u1") == [("i1", "purchase")]


def test_bad_url_is_explained():
    with pytest.raises(ValueError, match="sqlite:///PATH or redis://"):
        open_event_store("mysql://x")
