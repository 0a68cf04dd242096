"""``products.catalog`` records -> ClickHouse columns for the ``products`` table (migration 0005).

Pure conversion, no client: a sink decodes each record (``PRODUCT_CODEC.decode``) or takes a
:class:`~streams.domain.catalog.Product`, and inserts the result with
``client.execute(f"INSERT INTO products ({', '.join(PRODUCT_COLUMNS)}) VALUES", columns, columnar=True)``
where ``columns = [rows[name] for name in PRODUCT_COLUMNS]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from streams.domain.catalog import Product

PRODUCT_COLUMNS: tuple[str, ...] = (
    "product_id", "name", "category", "brand", "price", "currency",
    "web_skus", "app_product_ids", "eans", "deleted", "updated_at",
)  # fmt: skip

_MAX_DATETIME = 2**32 - 1  # ClickHouse DateTime is UInt32 seconds


def _seconds(value: Any) -> int:
    """A ``timestamp-millis`` (aware datetime from fastavro, or a long) as DateTime seconds, clamped."""
    millis = int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)
    return min(max(millis // 1000, 0), _MAX_DATETIME)


def product_rows(
    records: Iterable[Mapping[str, Any] | Product], *, updated_at: datetime | None = None
) -> dict[str, list[Any]]:
    """Column name -> values for ``products``: from decoded ``products.catalog`` records, or Products
    (these stamped ``updated_at``, default now, not deleted)."""
    columns: dict[str, list[Any]] = {name: [] for name in PRODUCT_COLUMNS}
    stamp = updated_at or datetime.now(UTC)
    for item in records:
        record = item.to_avro(stamp) if isinstance(item, Product) else item
        price = record.get("price")
        values = (
            record["productId"],
            record.get("name") or "",
            record.get("category") or "",
            record.get("brand") or "",
            float(price) if price is not None else None,
            record.get("currency") or "",
            list(record.get("webSkus") or ()),
            list(record.get("appProductIds") or ()),
            list(record.get("eans") or ()),
            1 if record.get("deleted") else 0,
            _seconds(record["updatedAt"]),
        )
        for name, value in zip(PRODUCT_COLUMNS, values, strict=True):
            columns[name].append(value)
    return columns


# Every product line of every event with its product (product_id '' when the catalog does not know the
# line's id). A line's id is its first non-empty one of sku, ean, app product id (the streaming lookup
# also tries the next one when the first is unknown; lines carry one id in practice). EANs are brought
# to the view's match_key form: spaces and hyphens removed, left-padded with zeros to 14 digits.
# Runs on ClickHouse 18.16 and current ClickHouse (one ANY LEFT JOIN ... USING; no window functions).
ENRICHED_LINES_SQL = """
SELECT message_id, channel, event, timestamp, kind, line_id, quantity, product_id
FROM
(
    SELECT
        message_id, channel, event, timestamp, quantity,
        multiIf(sku != '', 'web_sku', ean != '', 'ean', 'app_product_id') AS kind,
        multiIf(sku != '', sku, ean != '', ean, app_id) AS line_id,
        multiIf(
            sku != '', sku,
            ean != '', substring(concat('0000000000000', replaceRegexpAll(ean, '[ -]', '')),
                                 length(replaceRegexpAll(ean, '[ -]', '')), 14),
            app_id
        ) AS match_key
    FROM events_dedup
    ARRAY JOIN line_sku AS sku, line_ean AS ean, line_app_product_id AS app_id, line_quantity AS quantity
) AS lines
ANY LEFT JOIN (SELECT kind, match_key, product_id FROM product_ids) AS catalog USING (kind, match_key)
"""
