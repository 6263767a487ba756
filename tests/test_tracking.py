"""The champion rule, and the registry round trip on a real (SQLite) MLflow store."""
import json

import pytest

from training import tracking
from training.tracking import Champion, decide


def test_first_model_becomes_champion():
    assert decide(0.1, "k1", None, None)[0]


def test_same_evaluation_needs_a_strictly_better_score():
    champ = Champion(version="3", eval_key="k1", score=0.10, candidate={})
    assert decide(0.11, "k1", champ, None)[0]
    promote, reason = decide(0.10, "k1", champ, None)
    assert not promote and "does not beat" in reason


def test_new_data_compares_with_the_champion_recipe_rescored():
    champ = Champion(version="3", eval_key="old", score=0.50, candidate={"name": "als"})
    assert decide(0.12, "new", champ, champion_rescored=0.12)[0]  # tie: fresher model wins
    assert not decide(0.11, "new", champ, champion_rescored=0.12)[0]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.setup(tmp_path)
    assert uri.startswith("sqlite:///") and str(tmp_path) in uri
    return tmp_path


def test_register_and_move_alias(store, tmp_path):
    import mlflow

    versions = []
    for score in (0.1, 0.2):
        with mlflow.start_run() as run:
            (tmp_path / "b").mkdir(exist_ok=True)
            (tmp_path / "b" / "meta.json").write_text("{}")
            mlflow.log_artifacts(str(tmp_path / "b"), artifact_path="bundle")
            v = tracking.register(run.info.run_id, "bundle", {"eval_key": "k", "test_ndcg": str(score),
                                                               "candidate": json.dumps({"name": "x"})})
            previous = tracking.current_champion()
            promote, reason = decide(score, "k", previous, None)
            assert promote
            tracking.move_alias(v, reason, previous, run.info.run_id)
            versions.append(v)
    champ = tracking.current_champion()
    assert champ.version == versions[-1] and champ.score == pytest.approx(0.2) and champ.candidate == {"name": "x"}
    move = json.loads(mlflow.get_run(run.info.run_id).data.tags["champion_move"])
    assert move["from"] == versions[0] and move["to"] == versions[1]
    # artifacts stay inside the project folder
    assert (store / "mlruns" / "artifacts").is_dir()
