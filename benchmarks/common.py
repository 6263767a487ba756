"""Shared pieces of the benchmarks: the machine stamp, child-process measurement, statistics
and the results files.

Every figure is measured in a fresh child process (``run_child``): its wall time is the work
the child reports (imports and interpreter start excluded, reported apart), its peak RSS comes
from the kernel (``os.wait4`` rusage ``ru_maxrss``, exact for that process), and a watchdog
kills it past a memory or time limit so that a benchmark can never take the machine down.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "data" / "bench"  # git-ignored (data/*)
LIBRARIES = ("numpy", "scipy", "pandas", "pyarrow", "implicit", "bentoml", "starlette", "uvicorn", "httpx",
             "duckdb", "psutil", "scikit-learn", "threadpoolctl")
GB = 1024**3


def machine() -> dict:
    """What the figures were measured on: cores, memory, CPU model, Python and library versions, date."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        from threadpoolctl import threadpool_info

        blas = sorted({f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()})
    except Exception:  # noqa: BLE001 - informative only
        blas = []
    return {
        "nproc": os.cpu_count(),
        "nproc_command": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "memory_gb": mem_gb,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "blas": blas,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class ChildResult:
    ok: bool
    seconds: float | None  # the work, as the child measured it
    process_seconds: float  # the whole child, interpreter start and imports included
    peak_rss_gb: float  # kernel's max RSS of the child process
    payload: dict = field(default_factory=dict)
    error: str | None = None


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("PYTHONHASHSEED", "0")
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


class Watchdog:
    """Polls a child started in its own session: the RSS of the child, or of its whole process tree with
    ``tree``, and kills the session (SIGKILL to the process group) past ``max_rss_gb`` or ``timeout`` seconds,
    keeping why in ``killed``; ``peak_tree_gb`` is the largest tree RSS it saw. ``stop`` after the child exits."""

    def __init__(self, pid: int, timeout: float, max_rss_gb: float, tree: bool = False, every: float = 0.2):
        self.pid, self.timeout, self.max_rss_gb, self.tree, self.every = pid, timeout, max_rss_gb, tree, every
        self.start = time.perf_counter()
        self.killed: list[str] = []
        self.peak_tree = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @property
    def peak_tree_gb(self) -> float:
        return self.peak_tree / GB

    def _rss(self) -> int:
        import psutil

        root = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) if self.tree else root.memory_info().rss

    def _watch(self) -> None:
        import psutil

        while not self._done.wait(self.every):
            try:
                rss = self._rss()
            except psutil.Error:  # gone, or a child of the tree ended while read
                if not psutil.pid_exists(self.pid):
                    return
                continue
            self.peak_tree = max(self.peak_tree, rss)
            why = (f"killed: RSS {rss / GB:.1f} GB over the {self.max_rss_gb} GB limit" if rss > self.max_rss_gb * GB
                   else f"killed: over the {self.timeout:.0f} s time limit" if time.perf_counter() - self.start > self.timeout
                   else None)
            if why:
                self.killed.append(why)
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_child(args: list[str], timeout: float = 1800, max_rss_gb: float = 20.0, env: dict | None = None) -> ChildResult:
    """Run ``python -m <args...>``; the child prints one JSON line ``{"seconds": ..., ...}`` last.

    A ``Watchdog`` polls the child's RSS (psutil) and kills it past ``max_rss_gb`` or ``timeout``.
    """
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=child_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    guard = Watchdog(proc.pid, timeout, max_rss_gb)
    out_chunks, err_chunks = [], []
    readers = [threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    guard.stop()
    killed = guard.killed
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    elapsed = time.perf_counter() - start
    peak = usage.ru_maxrss * 1024 / GB  # Linux: kilobytes
    out, err = "".join(out_chunks), "".join(err_chunks)
    if proc.returncode != 0 or killed:
        why = killed[0] if killed else f"exit {proc.returncode}: {err.strip()[-1500:]}"
        return ChildResult(False, None, elapsed, peak, error=why)
    try:
        payload = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return ChildResult(False, None, elapsed, peak, error=f"no JSON result: {out[-500:]} {err[-1000:]}")
    return ChildResult(True, payload.get("seconds"), elapsed, peak, payload)


def emit(seconds: float, **extra) -> None:
    """What a child prints last: its work time and anything else worth keeping."""
    print(json.dumps({"seconds": seconds, **extra}, default=str), flush=True)


def run_loadgen(url: str, path: str, bodies: Path, seconds: float, rate: float | None = None,
                concurrency: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    """``python -m benchmarks.loadgen`` against ``url`` for ``seconds``: an open loop at ``rate`` req/s, else a
    closed loop of ``concurrency`` clients, on ``path`` (``mix``: the paths the bodies name), with the test
    servers' storefront and marketing keys (tests/server.py) and ``extra`` arguments. Its result, or
    ``{"path": path, "failed": the end of its stderr}``."""
    from tests.server import MARKETING_KEY, STOREFRONT_KEY

    args = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--path", path, "--bodies", str(bodies),
            "--duration", str(seconds), "--key", STOREFRONT_KEY, "--marketing-key", MARKETING_KEY, *extra]
    args += ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    r = subprocess.run(args, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=seconds + 120)
    if r.returncode != 0:
        return {"path": path, "failed": r.stderr[-1500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def load_brief(res: dict) -> str:
    """A ``run_loadgen`` result in one line for the log."""
    if "failed" in res:
        return f"FAILED {res['failed'][-300:]}"
    lat = res["latency_ms"]
    return (f"{res['throughput_rps']} req/s, p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms, "
            f"{res['requests']} requests, errors {res['errors']}")


def summary(values: list[float]) -> dict:
    """Median and spread (min, max, relative half-range) of repeated measurements."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "spread_pct": None, "values": []}
    med = statistics.median(values)
    return {"n": len(values), "median": med, "min": min(values), "max": max(values),
            "spread_pct": round(100 * (max(values) - min(values)) / 2 / med, 1) if med else None,
            "values": [round(v, 4) for v in values]}


def ratio(ours: float | None, floor: float | None) -> float | None:
    """For reports: two decimals. A goal is judged on ``exact_ratio`` (0.699 is short of 0.70)."""
    exact = exact_ratio(ours, floor)
    return None if exact is None else round(exact, 2)


def exact_ratio(ours: float | None, floor: float | None) -> float | None:
    return None if ours is None or floor is None or floor == 0 else ours / floor


def fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}"


def fmt_spread(s: dict, digits: int = 2, unit: str = "") -> str:
    """'12.3 s (11.9–12.8, n=3)'."""
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:,.{digits}f}{unit} (n=1)"
    return f"{s['median']:,.{digits}f}{unit} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f}, n={s['n']})"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def write_results(name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    j, m = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    j.write_text(json.dumps(data, indent=2, default=str) + "\n")
    m.write_text(markdown)
    return j, m


def machine_markdown(info: dict) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items() if v)
    return (f"Machine: `nproc` = {info['nproc_command']}, {info['memory_gb']} GB RAM, {info['cpu_model']}; "
            f"Python {info['python']} ({info['platform']}); {libs}; BLAS: {', '.join(info['blas']) or 'n/a'}; "
            f"env {info['env']}; run {info['date']}.")
