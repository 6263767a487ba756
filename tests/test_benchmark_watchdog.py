"""The benchmarks' watchdog (benchmarks/common.py ``Watchdog``): a child past its time or memory limit is
killed with its whole session and the reason is reported, in ``run_child`` and in the quality benchmark's
``run_command``; a child within its limits runs to the end."""
from __future__ import annotations

import sys

from benchmarks.common import run_child
from benchmarks.quality import run_command

SLEEP = "import time; time.sleep(30)"
HOLD_300MB = "b = bytearray(300 * 1024 * 1024); import time; time.sleep(30)"


def test_run_child_reports_a_childs_json_and_kills_one_over_time():
    ok = run_child(["json.tool", "--help"], timeout=60)  # exits 0 but prints no JSON line
    assert not ok.ok and ok.error.startswith("no JSON result")
    slow = run_child(["timeit", "-n", "1", SLEEP], timeout=1)
    assert not slow.ok and slow.error == "killed: over the 1 s time limit" and slow.process_seconds < 10


def test_run_command_kills_a_tree_over_its_memory_limit_and_names_it(tmp_path):
    # the memory is held by a grandchild: the tree's RSS counts it
    res = run_command(["bash", "-c", f"{sys.executable} -c '{HOLD_300MB}'; true"], tmp_path, tmp_path / "log", timeout=60,
                      max_rss_gb=0.2)
    assert not res["ok"] and res["error"].startswith("killed: RSS") and "over the 0.2 GB limit" in res["error"]
    assert res["seconds"] < 20 and res["peak_tree_rss_gb"] > 0.2
    fine = run_command(["bash", "-c", "echo done"], tmp_path, tmp_path / "log2", timeout=60, max_rss_gb=1)
    assert fine["ok"] and (tmp_path / "log2").read_text() == "done\n"
