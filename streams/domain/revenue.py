"""Revenue: the one definition the segment engine, the warehouse and the KPIs use.

- An event's **value** is ``properties.revenue`` when it is a finite number; else ``properties.total``
  when that is; else the sum of quantity x unit price over its lines (lines without a price, or with a
  quantity or price that is not finite, add nothing). ``revenue`` comes first because the Segment
  e-commerce spec names it the order's revenue; many shops send only ``total``; POS baskets and
  orders sent without either have lines only. A number sent as text (``"12.50"``) is not a number.
- Its **revenue** is ``+value`` for a purchase (``Order Completed``), ``-value`` for a return or refund
  (``Order Refunded``, ``Product Returned``), and 0 for every other event: summing revenue over any set
  of events gives net revenue, and a cart or checkout that carries products is not revenue.

The segment engine's ``lifetime_revenue`` is that net sum over a person's events; ``sum: {of: revenue}``
sums the value of the events its filters count. The identity sink writes each resolved event's revenue
to ``event_persons.revenue`` (hence ``events_by_person``), and the revenue KPI sums that column.
docs/decisions/0001-revenue.md has the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

PURCHASE_EVENTS: Final = frozenset({"Order Completed"})
RETURN_EVENTS: Final = frozenset({"Order Refunded", "Product Returned"})
# The properties that state an event's value, in order of precedence.
STATED_KEYS: Final = ("revenue", "total")


def stated_value(properties: Mapping[str, Any]) -> float | None:
    """``properties.revenue``, else ``properties.total``, as a float; None when neither is a finite number."""
    for key in STATED_KEYS:
        value = properties.get(key)
        if (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, float):
            number = float(value)
            if math.isfinite(number):
                return number
    return None


def lines_value(lines: Iterable[tuple[float, float | None]]) -> float:
    """The sum of quantity x unit price over ``(quantity, unit_price)`` pairs that have a finite price."""
    total = 0.0
    for quantity, price in lines:
        if price is not None and math.isfinite(price) and math.isfinite(quantity):
            total += quantity * price
    return total if math.isfinite(total) else 0.0


def event_value(properties: Mapping[str, Any], lines: Iterable[tuple[float, float | None]]) -> float:
    """The value an event carries: its stated value, else its lines' total."""
    stated = stated_value(properties)
    return stated if stated is not None else lines_value(lines)


def signed_revenue(name: str, value: float) -> float:
    """The revenue of an event named ``name`` with ``value``: + for purchases, - for returns, else 0."""
    if name in PURCHASE_EVENTS:
        return value
    if name in RETURN_EVENTS:
        return -value
    return 0.0


def moves_revenue(name: str) -> bool:
    """Whether an event named ``name`` can have revenue (a purchase or a return)."""
    return name in PURCHASE_EVENTS or name in RETURN_EVENTS
