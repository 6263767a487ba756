"""Co-purchase counts behind ``bought_together`` as relational expressions: how many baskets (orders)
hold each item, and each ordered pair of distinct items. ``features.cooccurrence.rules_from_counts``
turns them into the association rules, as ``association_rules`` does from a baskets matrix."""
from __future__ import annotations

import ibis


def basket_items(orders: ibis.Table) -> ibis.Table:
    """Distinct (order_id, item_id) of the order lines with quantity > 0: the binary baskets."""
    od = orders.filter(orders.quantity > 0)
    return od.select("order_id", "item_id").distinct()


def item_counts(baskets: ibis.Table) -> ibis.Table:
    """item_id, baskets: the number of baskets holding the item."""
    return baskets.group_by("item_id").aggregate(baskets=baskets.count())


def pair_counts(baskets: ibis.Table) -> ibis.Table:
    """item_i, item_j, co: baskets holding both, for every ordered pair of distinct items bought together."""
    left = baskets.select(order_id="order_id", item_i="item_id")
    right = baskets.select(order_id_r="order_id", item_j="item_id")
    pairs = left.join(right, left.order_id == right.order_id_r).filter(lambda t: t.item_i != t.item_j)
    return pairs.group_by(["item_i", "item_j"]).aggregate(co=pairs.count())


def n_baskets(baskets: ibis.Table) -> ibis.Scalar:
    return baskets.order_id.nunique()
