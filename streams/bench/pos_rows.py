"""A generated POS export for the import benchmark: orders of one to five basket lines, as a till
system writes them (one CSV line per line item, the order's fields repeated on every line)."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

POS_COLUMNS = (
    "transactionId",
    "timestamp",
    "storeId",
    "terminalId",
    "loyaltyCard",
    "email",
    "event",
    "ean",
    "quantity",
    "unitPrice",
    "currency",
)
_STORES = tuple(f"{city}-{n:02d}" for city in ("LDN", "MAN", "BRS", "EDI", "LDS") for n in range(1, 9))
_EANS = tuple(f"50{n:011d}" for n in range(1, 2001))


def write_pos_csv(path: Path, lines: int, *, seed: int = 24, bad_every: int = 500) -> tuple[int, int]:
    """Write about ``lines`` line items (whole orders) to ``path``; returns (lines, orders) written.

    Every ``bad_every``-th order has no identifier (a bad row for ``events.invalid``); 0 writes none.
    """
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, 8, 0, tzinfo=UTC)
    written = orders = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(POS_COLUMNS)
        while written < lines:
            orders += 1
            store = rng.choice(_STORES)
            moment = start + timedelta(seconds=orders * 37 + rng.randrange(30))
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            card = email = ""
            if not (bad_every and orders % bad_every == 0):
                if rng.random() < 0.7:
                    card = f"6337 {rng.randrange(10_000):04d} {rng.randrange(10_000):04d}"
                else:
                    email = f"shopper{rng.randrange(200_000)}@example.com"
            event = "Product Returned" if rng.random() < 0.03 else "Order Completed"
            terminal = f"T{rng.randrange(1, 6)}"
            txn = f"{store}-{orders:09d}"
            for _ in range(rng.choice((1, 1, 2, 2, 3, 3, 4, 5))):
                price = f"{rng.randrange(50, 20_000) / 100:.2f}"
                row = (txn, stamp, store, terminal, card, email, event, rng.choice(_EANS))
                out.writerow((*row, str(rng.choice((1, 1, 1, 2, 3))), price, "GBP"))
                written += 1
    return written, orders
