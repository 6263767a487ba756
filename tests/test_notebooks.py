"""Every notebook runs top to bottom in a real Jupyter kernel (jupytext -> nbclient) on a tiny
synthetic shop, and draws its plots: notebooks that are executed in CI do not rot."""
from pathlib import Path

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
MIN_PLOTS = {"01_explore_shop": 4, "02_compare_recommenders": 2, "03_churn_analysis": 5, "04_experiments": 3}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    from features.synthetic import ShopConfig, generate_shop

    out = tmp_path_factory.mktemp("notebook_shop")
    generate_shop(ShopConfig.preset("tiny"), out)
    return out


def run_notebook(path: Path, timeout: int = 300):
    """Execute the jupytext notebook in a fresh python3 kernel, working directory = notebooks/."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def test_every_notebook_is_tested():
    assert [p.stem for p in NOTEBOOKS] == sorted(MIN_PLOTS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, shop, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPREC_NOTEBOOK_SHOP", str(shop))
    monkeypatch.setenv("SHOPREC_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.delenv("SHOPREC_NOTEBOOK_MLFLOW", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = run_notebook(path)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    plots = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(plots) >= MIN_PLOTS[path.stem], f"{path.name} drew {len(plots)} plots"
