"""A service serves one shop: a model of another lineage is refused at reload, like a broken one,
and every answer's model_version names the shop."""

from serving.reload import ModelSlot
from training.bundle import ModelBundle


def bundle_of(tmp_path, shop: str | None):
    from tests.test_storefront import make_bundle

    path = tmp_path / f"bundle-{shop}"
    make_bundle({"run_id": "r"} | ({"shop": shop} if shop else {})).save(path)
    assert ModelBundle.load(path).meta.get("shop") == shop
    return path


def test_another_shops_model_is_refused_and_the_first_keeps_serving(tmp_path):
    north, south = bundle_of(tmp_path, "north"), bundle_of(tmp_path, "south")
    published = {"now": ("a", north, "1")}
    slot = ModelSlot(resolve=lambda tag: (published["now"][1], f"shoprec-recommender:{published['now'][0]}",
                                          published["now"][2]))
    assert slot.reload().status == "loaded" and slot.shop == "north" and slot.current.version == "north/v1"
    published["now"] = ("b", south, "2")
    outcome = slot.reload()
    assert outcome.status == "refused" and "shop 'south'" in outcome.detail and "serves shop 'north'" in outcome.detail
    assert slot.current.version == "north/v1"
    published["now"] = ("c", north, "3")
    assert slot.reload().status == "loaded" and slot.current.version == "north/v3"


def test_the_shop_can_be_fixed_before_any_model_loads(tmp_path):
    south = bundle_of(tmp_path, "south")
    slot = ModelSlot.from_env({"SHOPREC_SHOP": "north"})
    slot._resolve = lambda tag: (south, "shoprec-recommender:s", "4")
    outcome = slot.reload()
    assert outcome.status == "refused" and not slot.ready
