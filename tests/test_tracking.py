"""The champion rule, and the registry round trip on a real (SQLite) MLflow store."""
import json

import pytest

from training import tracking


def test_shop_names_are_slugs():
    assert tracking.shop_name("Online Retail (UCI)") == "online-retail-uci"
    assert tracking.alias_for("online-retail") == "champion-online-retail"
    with pytest.raises(ValueError, match="shop"):
        tracking.check_shop("Bad Name")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.setup(tmp_path)
    assert uri.startswith("sqlite:///") and str(tmp_path) in uri
    return tmp_path


def _register(tmp_path, shop: str, score: float) -> tuple[str, str]:
    import mlflow

    with mlflow.start_run() as run:
        (tmp_path / "b").mkdir(exist_ok=True)
        (tmp_path / "b" / "meta.json").write_text("{}")
        mlflow.log_artifacts(str(tmp_path / "b"), artifact_path="bundle")
        v = tracking.register(run.info.run_id, "bundle", {"eval_key": "k", "test_ndcg": str(score), "shop": shop,
                                                           "candidate": json.dumps({"name": "x"})})
        return v, run.info.run_id


def test_register_and_move_alias_within_a_lineage(store, tmp_path):
    import mlflow

    versions = []
    for score in (0.1, 0.2):
        v, run_id = _register(tmp_path, "north", score)
        previous = tracking.current_champion(shop="north")
        tracking.move_alias(v, "better", previous, run_id, shop="north")
        versions.append(v)
    champ = tracking.current_champion(shop="north")
    assert champ.version == versions[-1] and champ.score == pytest.approx(0.2) and champ.candidate == {"name": "x"}
    move = json.loads(mlflow.get_run(run_id).data.tags["champion_move"])
    assert move["from"] == versions[0] and move["to"] == versions[1] and move["alias"] == "champion-north"
    assert (store / "mlruns" / "artifacts").is_dir()  # artifacts stay inside the project folder


def test_lineages_have_their_own_champions(store, tmp_path):
    v1, r1 = _register(tmp_path, "north", 0.5)
    tracking.move_alias(v1, "first", None, r1, shop="north")
    v2, r2 = _register(tmp_path, "south", 0.1)
    tracking.move_alias(v2, "first", None, r2, shop="south")
    assert tracking.current_champion(shop="north").version == v1
    assert tracking.current_champion(shop="south").version == v2
    assert tracking.latest_shop() == "south" and tracking.current_champion().version == v2
    assert {s: [str(v.version) for v in vs] for s, vs in tracking.lineages().items()} == {"north": [v1], "south": [v2]}
    assert tracking.current_champion(shop="west") is None
