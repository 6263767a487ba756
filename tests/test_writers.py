"""Tables are written in the format their file name says, or the name is refused before any work."""
import gzip
import os
import subprocess
import sys

import pandas as pd
import pytest

from features.contract import SPECS
from features.errors import InputError
from features.readers import read_raw
from features.validate import validate
from features.writers import write_table
from tests.conftest import REPO

EVENTS = pd.DataFrame({"ts": pd.to_datetime(["2024-01-01 10:00:00", "2024-01-02 11:30:05.250"], format="ISO8601"),
                       "user_id": ["u1", "élodie"], "session_id": ["s1", "s2"], "event_type": ["view", "purchase"],
                       "item_id": ["i1", "i,2"]})
MAGIC = {".csv": b"ts,user_id", ".csv.gz": b"\x1f\x8b", ".parquet": b"PAR1", ".jsonl": b'{"ts":'}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz", ".pq"])
def test_each_name_gets_its_format_and_reads_back_as_the_same_events(tmp_path, suffix):
    path = write_table(EVENTS, tmp_path / f"events{suffix}")
    if suffix in MAGIC:
        assert path.read_bytes().startswith(MAGIC[suffix])
    back = validate(read_raw(path), SPECS["events"], path.name).accepted
    assert back["ts"].tolist() == EVENTS["ts"].tolist()
    assert back[["user_id", "item_id", "event_type"]].astype(str).values.tolist() == \
        EVENTS[["user_id", "item_id", "event_type"]].values.tolist()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left beside it


def test_gzip_output_is_reproducible(tmp_path):
    a, b = write_table(EVENTS, tmp_path / "a.csv.gz"), write_table(EVENTS, tmp_path / "b.csv.gz")
    assert a.read_bytes() == b.read_bytes() and gzip.decompress(a.read_bytes()).startswith(b"ts,user_id,")


@pytest.mark.parametrize("name", ["events.xlsx", "events", "events.csv.zip", "events.json"])
def test_a_name_without_a_writable_format_is_refused(tmp_path, name):
    with pytest.raises(InputError, match="cannot tell the table format from the name"):
        write_table(EVENTS, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_export_events_writes_what_the_name_says(tmp_path):
    from features.event_store import Event, SQLiteEventStore

    store = SQLiteEventStore(tmp_path / "events.db")
    store.append("u1", [Event("i1", "view", "2024-01-01T10:00:00Z", "s1"), Event("i2", "purchase", "2024-01-01T10:05:00Z")])
    store.close()

    def export(out):
        return subprocess.run([sys.executable, "-m", "training.cli", "export-events", "--url",
                               f"sqlite:///{tmp_path / 'events.db'}", "--out", str(out)], cwd=tmp_path, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)

    done = export(tmp_path / "out" / "events.csv")
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "out" / "events.csv").read_text()  # CSV, not Parquet under a .csv name
    assert text.splitlines()[0] == "ts,user_id,session_id,event_type,item_id" and "rt-u1" in text
    assert len(validate(read_raw(tmp_path / "out" / "events.csv"), SPECS["events"], "e").accepted) == 2

    refused = export(tmp_path / "out" / "events.xlsx")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "events.xlsx: cannot tell the table format from the name" in refused.stderr
    assert "end it with .csv, .csv.gz, .parquet or .jsonl" in refused.stderr
    assert not (tmp_path / "out" / "events.xlsx").exists()
