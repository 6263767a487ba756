"""The data contract: the canonical columns of events, orders and items (PRODUCT.md).

Raw files in any supported format are validated against these specs and written as
canonical Parquet tables with exactly these columns and dtypes.
"""
from __future__ import annotations

from dataclasses import dataclass

EVENT_TYPES = ("view", "cart", "purchase")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str", "datetime", "float", "bool"
    required: bool = True  # the column must be present in the file
    nullable: bool = False  # a value may be empty


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


EVENTS = TableSpec(
    "events",
    (
        Column("ts", "datetime"),
        Column("user_id", "str", nullable=True),  # empty for anonymous shoppers
        Column("session_id", "str"),
        Column("event_type", "str"),  # one of EVENT_TYPES
        Column("item_id", "str"),
        Column("price", "float", required=False, nullable=True),
        Column("quantity", "float", required=False, nullable=True),
    ),
)

ORDERS = TableSpec(
    "orders",
    (
        Column("order_id", "str"),
        Column("user_id", "str"),
        Column("item_id", "str"),
        Column("ts", "datetime"),
        Column("quantity", "float"),  # negative: a return or cancellation line
        Column("price", "float"),  # unit price, >= 0
    ),
)

ITEMS = TableSpec(
    "items",
    (
        Column("item_id", "str"),
        Column("category", "str", required=False, nullable=True),
        Column("price", "float", required=False, nullable=True),
        Column("title", "str", required=False, nullable=True),
        Column("in_stock", "bool", required=False, nullable=True),
    ),
)

SPECS = {s.name: s for s in (EVENTS, ORDERS, ITEMS)}
