import pytest
from pydantic import ValidationError

from training.config import Candidate, TrainConfig


def test_config_survives_dump_and_load(tmp_path):
    config = TrainConfig(test_days=14)
    config.dump(tmp_path / "train.yaml")
    assert TrainConfig.load(tmp_path / "train.yaml") == config


def test_shipped_config_file_is_valid():
    from tests.conftest import REPO

    config = TrainConfig.load(REPO / "configs" / "train.yaml")
    assert config.search is not None and config.search.budget_minutes > 0 and config.peers
    assert config.search.trending_half_life_days and config.search.als and config.search.ease_l2
    from training.propensity.config import PropensityConfig

    assert config.propensity == PropensityConfig()  # the shipped file states the churn and conversion defaults


def test_bad_values_name_the_field():
    with pytest.raises(ValidationError, match="factors"):
        Candidate.model_validate({"name": "x", "model": {"kind": "als", "factors": 0}})
    with pytest.raises(ValidationError, match="kind"):
        Candidate.model_validate({"name": "x", "model": {"kind": "nope"}})


def test_unknown_candidate_lookup_is_clear():
    with pytest.raises(KeyError, match="no candidate named"):
        TrainConfig().candidate("missing")
