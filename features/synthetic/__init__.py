"""A seeded synthetic shop whose truth is known, so every model's score has an oracle bound.

    from features.synthetic import ShopConfig, generate_shop, load_truth
    paths = generate_shop(ShopConfig.preset("tiny"), "data/tiny")
    truth = load_truth(paths.truth_dir)
    scores = truth.preference(["u000001"], truth.item_ids, at="2024-12-01")

Presets (``ShopConfig.preset``): generic sizes tiny / small / medium / large, and shop kinds
(``KINDS``) grocery / wide / gift at full size, or "<kind>-test" for tests. The generative model
is described in features/synthetic/model.py; the files written in features/synthetic/generate.py;
the truth in features/synthetic/truth.py; what a shop shows, in numbers, in
features/synthetic/describe.py.
"""
from features.synthetic.config import KINDS, PRESETS, ShopConfig
from features.synthetic.generate import ShopPaths, generate_shop
from features.synthetic.model import World, build_world
from features.synthetic.truth import Truth, load_truth

__all__ = ["KINDS", "PRESETS", "ShopConfig", "ShopPaths", "Truth", "World", "build_world", "generate_shop", "load_truth"]
