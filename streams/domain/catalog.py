"""The single product view: products, the channel ids that name them, and the lookup from any channel id
(web SKU, store EAN, app product id) to one product (pure; see docs/catalog.md).

Id normalisation (the same on import and on lookup):

- web SKUs, app product ids and product ids: surrounding whitespace removed, case kept (they are opaque
  strings; two SKUs that differ only in case are different SKUs in the shops we know of);
- EANs: spaces and hyphens removed, the rest must be ASCII digits, at most 14 of them. They are compared
  as GTIN-14, i.e. left-padded with zeros to 14 digits, which is how GS1 defines the equality of GTIN-8,
  UPC-A (GTIN-12), EAN-13 and GTIN-14: ``4006381333931``, ``04006381333931`` and the number
  ``4006381333931`` sent as a JSON integer all name one product. An all-zero code names nothing.

A web SKU that equals a product id also finds that product: web shops often send the product id as the
SKU (the simulation and Segment's ecommerce spec do).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

COLUMNS: tuple[str, ...] = (
    "product_id",
    "name",
    "category",
    "brand",
    "price",
    "currency",
    "web_sku",
    "app_product_id",
    "ean",
)
ID_SEPARATOR = "|"
MAX_REPORTED = 20  # problems listed in one CatalogError message; all are kept in .problems
_ID_FIELDS = ("web_sku", "app_product_id", "ean")
_TEXT_FIELDS = ("name", "category", "brand")


@dataclass(frozen=True, slots=True)
class Product:
    """One product and every channel id that names it (``schemas/product.avsc``)."""

    product_id: str
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    currency: str | None = None
    web_skus: tuple[str, ...] = ()
    app_product_ids: tuple[str, ...] = ()
    eans: tuple[str, ...] = ()

    def to_avro(self, updated_at: datetime, deleted: bool = False) -> dict[str, Any]:
        """The ``products.catalog`` record (``schemas/product.avsc``) of this product."""
        return {
            "productId": self.product_id,
            "name": self.name,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "currency": self.currency,
            "webSkus": list(self.web_skus),
            "appProductIds": list(self.app_product_ids),
            "eans": list(self.eans),
            "deleted": deleted,
            "updatedAt": updated_at,
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Product:
        """The product of a decoded ``products.catalog`` record (``deleted`` is the caller's to check)."""
        price = record.get("price")
        return cls(
            product_id=record["productId"],
            name=record.get("name"),
            category=record.get("category"),
            brand=record.get("brand"),
            price=float(price) if price is not None else None,
            currency=record.get("currency"),
            web_skus=tuple(record.get("webSkus") or ()),
            app_product_ids=tuple(record.get("appProductIds") or ()),
            eans=tuple(record.get("eans") or ()),
        )


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """One thing wrong with a catalog file: where (file, line or row, field) and what."""

    source: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}, line {self.line}"
        return f"{where}, field {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class CatalogError(ValueError):
    """A catalog file is unusable; the message names the file, line or row and field of each problem."""

    def __init__(self, problems: Iterable[CatalogProblem]) -> None:
        self.problems = tuple(problems)
        shown = [str(p) for p in self.problems[:MAX_REPORTED]]
        if len(self.problems) > MAX_REPORTED:
            shown.append(f"... and {len(self.problems) - MAX_REPORTED} more problems")
        super().__init__("\n".join(shown))


def normalise_id(value: str) -> str | None:
    """A web SKU, app product id or product id as compared: stripped; None when nothing is left."""
    key = value.strip()
    return key or None


def normalise_ean(value: str) -> str | None:
    """An EAN/UPC/GTIN as compared: its GTIN-14 form; None for anything that is not such a code."""
    digits = value.strip().replace(" ", "").replace("-", "")
    if not digits or len(digits) > 14 or not (digits.isascii() and digits.isdigit()) or not digits.strip("0"):
        return None
    return digits.zfill(14)


class Catalog:
    """Channel id -> product, for the ids of every product upserted (the newest claim of an id wins)."""

    __slots__ = ("_by_app", "_by_ean", "_by_sku", "_products")

    def __init__(self) -> None:
        self._products: dict[str, Product] = {}
        # normalised channel id -> product id; only ids of products currently in _products.
        self._by_sku: dict[str, str] = {}
        self._by_ean: dict[str, str] = {}
        self._by_app: dict[str, str] = {}

    @classmethod
    def of(cls, products: Iterable[Product]) -> Catalog:
        """A catalog holding ``products``, upserted in order."""
        catalog = cls()
        for product in products:
            catalog.upsert(product)
        return catalog

    def __len__(self) -> int:
        return len(self._products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self._products.values())

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._products

    def get(self, product_id: str) -> Product | None:
        """The product with this id, or None."""
        return self._products.get(product_id)

    def upsert(self, product: Product) -> None:
        """Add or replace ``product``: ids it no longer lists stop finding it, its ids now find it."""
        old = self._products.get(product.product_id)
        if old is not None:
            self._unindex(old)
        self._products[product.product_id] = product
        pid = product.product_id
        for index, ids, normalise in self._indexes(product):
            for raw in ids:
                key = normalise(raw)
                if key is not None:
                    index[key] = pid  # an id claimed by another product moves here: last upsert wins

    def remove(self, product_id: str) -> None:
        """Forget the product and its ids (a no-op for an unknown id)."""
        old = self._products.pop(product_id, None)
        if old is not None:
            self._unindex(old)

    def lookup(
        self, *, sku: str | None = None, ean: str | None = None, app_product_id: str | None = None
    ) -> Product | None:
        """The product of the first of ``sku``, ``ean``, ``app_product_id`` (in this order) that is known."""
        if sku is not None:
            key = sku.strip()
            pid = self._by_sku.get(key)
            if pid is None and key in self._products:
                pid = key  # the web sent the product id as its SKU
            if pid is not None:
                return self._products[pid]
        if ean is not None:
            gtin = normalise_ean(ean)
            pid = self._by_ean.get(gtin) if gtin is not None else None
            if pid is not None:
                return self._products[pid]
        if app_product_id is not None:
            pid = self._by_app.get(app_product_id.strip())
            if pid is not None:
                return self._products[pid]
        return None

    def _indexes(self, product: Product) -> Iterator[tuple[dict[str, str], tuple[str, ...], Any]]:
        yield self._by_sku, product.web_skus, normalise_id
        yield self._by_ean, product.eans, normalise_ean
        yield self._by_app, product.app_product_ids, normalise_id

    def _unindex(self, product: Product) -> None:
        for index, ids, normalise in self._indexes(product):
            for raw in ids:
                key = normalise(raw)
                # Only drop ids still pointing here: a later product may have claimed one since.
                if key is not None and index.get(key) == product.product_id:
                    del index[key]


# --- parsing -------------------------------------------------------------------------------------------


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[CatalogProblem] = []

    def add(self, line: int | None, field: str | None, message: str) -> None:
        self.items.append(CatalogProblem(self.source, line, field, message))


def parse_catalog(text: str, *, source: str, fmt: Literal["csv", "jsonl"]) -> list[Product]:
    """Every product of a CSV or JSONL catalog file, ids cleaned; raises CatalogError listing every problem.

    ``source`` names the file in messages. Nothing is returned unless the whole file is valid.
    """
    problems = _Problems(source)
    if fmt == "csv":
        rows = list(_csv_rows(text, problems))
    elif fmt == "jsonl":
        rows = list(_jsonl_rows(text, problems))
    else:
        raise CatalogError([CatalogProblem(source, None, None, f"unknown format {fmt!r}; use csv or jsonl")])
    products: list[tuple[int, Product]] = []
    for line, cells in rows:
        product = _product(line, cells, problems)
        if product is not None:
            products.append((line, product))
    _check_unique(products, problems)
    if not rows and not problems.items:
        problems.add(None, None, "no products (the file is empty)")
    if problems.items:
        raise CatalogError(problems.items)
    return [product for _, product in products]


def _csv_rows(text: str, problems: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header: list[str] | None = None
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines carry nothing
        if header is None:
            header = [cell.strip() for cell in cells]
            if not _check_columns(line, header, problems):
                return
            continue  # unknown columns were reported; the rows are still checked for the rest
        if len(cells) > len(header):
            problems.add(line, None, f"{len(cells)} cells but the header has {len(header)} columns")
            continue
        yield line, dict(zip(header, cells, strict=False))


def _check_columns(line: int, names: Iterable[str], problems: _Problems) -> bool:
    """Report unknown or repeated columns; False when no row can be read (no product_id column)."""
    names = list(names)
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        problems.add(
            line, None, f"unknown column(s) {', '.join(map(repr, unknown))}; known: {', '.join(COLUMNS)}"
        )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        problems.add(line, None, f"column(s) {', '.join(duplicated)} given twice")
    if "product_id" not in names:
        problems.add(line, "product_id", "the column is missing")
        return False
    return True


def _jsonl_rows(text: str, problems: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.add(line, None, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(record, dict):
            problems.add(line, None, f"must be a JSON object, got {type(record).__name__}")
            continue
        if _check_columns(line, record, problems):
            yield line, record  # unknown keys were reported; the known ones are still checked


def _text(line: int, field: str, value: Any, problems: _Problems) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.add(line, field, f"must be text, got {type(value).__name__}")
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    cleaned = str(value).strip()
    return cleaned or None


def _product(line: int, cells: dict[str, Any], problems: _Problems) -> Product | None:
    before = len(problems.items)
    product_id = _text(line, "product_id", cells.get("product_id"), problems)
    if product_id is None and len(problems.items) == before:
        problems.add(line, "product_id", "missing (every product needs one)")
    texts = {name: _text(line, name, cells.get(name), problems) for name in _TEXT_FIELDS}
    price = _price(line, cells.get("price"), problems)
    currency = _currency(line, cells.get("currency"), problems)
    ids = {name: _ids(line, name, cells.get(name), problems) for name in _ID_FIELDS}
    if product_id is None or len(problems.items) != before:
        return None
    return Product(
        product_id=product_id,
        name=texts["name"],
        category=texts["category"],
        brand=texts["brand"],
        price=price,
        currency=currency,
        web_skus=ids["web_sku"],
        app_product_ids=ids["app_product_id"],
        eans=ids["ean"],
    )


def _price(line: int, value: Any, problems: _Problems) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.add(line, "price", f"must be a number, got {type(value).__name__}")
        return None
    try:
        price = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        problems.add(line, "price", f"{value!r} is not a number (use a dot for decimals, no currency sign)")
        return None
    if not math.isfinite(price) or price < 0:
        problems.add(line, "price", f"{value!r} is not a price (must be a finite number >= 0)")
        return None
    return price


def _currency(line: int, value: Any, problems: _Problems) -> str | None:
    text = _text(line, "currency", value, problems)
    if text is None:
        return None
    code = text.upper()
    if len(code) != 3 or not (code.isascii() and code.isalpha()):
        problems.add(line, "currency", f"{text!r} is not an ISO 4217 code (three letters, like GBP)")
        return None
    return code


def _ids(line: int, field: str, value: Any, problems: _Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        items: list[Any] = list(value)
    elif isinstance(value, str):
        items = value.split(ID_SEPARATOR)
    else:
        items = [value]
    cleaned: list[str] = []
    for item in items:
        text = _text(line, field, item, problems)
        if text is None:
            continue
        if field == "ean":
            text = text.replace(" ", "").replace("-", "")
            if normalise_ean(text) is None:
                problems.add(line, field, f"{item!r} is not an EAN/UPC/GTIN (up to 14 digits, not all zeros)")
                continue
        if text not in cleaned:
            cleaned.append(text)
    return tuple(cleaned)


def _check_unique(products: list[tuple[int, Product]], problems: _Problems) -> None:
    """Within one file every product id, and every channel id, must name one product."""
    first_line: dict[str, int] = {}
    for line, product in products:
        if product.product_id in first_line:
            problems.add(
                line,
                "product_id",
                f"{product.product_id!r} already defined on line {first_line[product.product_id]}",
            )
        else:
            first_line[product.product_id] = line
    owners: dict[tuple[str, str], tuple[int, str]] = {}
    for line, product in products:
        claims = [("web_sku", normalise_id(s), s) for s in product.web_skus]
        claims += [("ean", normalise_ean(e), e) for e in product.eans]
        claims += [("app_product_id", normalise_id(a), a) for a in product.app_product_ids]
        for field, key, raw in claims:
            if key is None:
                continue
            owner = owners.setdefault((field, key), (line, product.product_id))
            if owner[1] != product.product_id:
                problems.add(
                    line,
                    field,
                    f"{raw!r} also names product {owner[1]!r} (line {owner[0]}); an id names one product",
                )
            elif field == "web_sku" and key in first_line and key != product.product_id:
                problems.add(
                    line,
                    field,
                    f"{raw!r} is the product id of another product (line {first_line[key]}); "
                    "a web SKU equal to a product id finds that product",
                )


def render_csv(products: Iterable[Product]) -> str:
    """The CSV catalog file of ``products`` (the format :func:`parse_catalog` reads)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in products:
        writer.writerow(
            [
                p.product_id,
                p.name or "",
                p.category or "",
                p.brand or "",
                "" if p.price is None else repr(p.price),
                p.currency or "",
                ID_SEPARATOR.join(p.web_skus),
                ID_SEPARATOR.join(p.app_product_ids),
                ID_SEPARATOR.join(p.eans),
            ]
        )
    return out.getvalue()
