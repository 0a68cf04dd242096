"""``omniseg catalog``: import and list the single product view (the ``products.catalog`` topic)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.cli.errors import require_kafka
from streams.settings import get_settings


@click.group("catalog")
def catalog() -> None:
    """The product catalog: each channel's ids (web SKU, app product id, store EAN) -> one product."""


@catalog.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None, help="Default: from the extension."
)
@click.option("--delete-missing", is_flag=True, help="Mark products in the topic but not in FILE as deleted.")
def import_(file: Path, fmt: str | None, delete_missing: bool) -> None:
    """Validate FILE (CSV or JSONL) whole, then produce every product to products.catalog.

    Columns (CSV header) or keys (JSONL): product_id (required), name, category, brand, price, currency,
    web_sku, app_product_id, ean. Several ids in one cell are separated by '|' (JSONL also takes lists).
    Any problem (unknown column, missing product_id, bad price, an id naming two products) stops the
    import before anything is produced; each is reported with file, line and field. Running workers
    see the new catalog within a second, with no restart.

    Example: omniseg catalog import deploy/examples/catalog.csv
    """
    from tqdm import tqdm

    from streams.domain.catalog import CatalogError
    from streams.sources.catalog_import import CatalogImportFailed, import_catalog

    settings = get_settings()
    require_kafka(settings)
    bars: list[tqdm[None]] = []  # opened at the first acknowledgement: after validation passed

    def progress(count: int) -> None:
        if not bars:
            bars.append(tqdm(desc="products acknowledged", unit="rec", file=sys.stderr, leave=False))
        bars[0].update(count)

    try:
        report = import_catalog(settings, file, fmt=fmt, delete_missing=delete_missing, progress=progress)
    except CatalogError as exc:
        count = len(exc.problems)
        click.echo(f"error: {file} was not imported ({count} problem{'s' if count != 1 else ''}):", err=True)
        click.echo(str(exc), err=True)
        sys.exit(2)
    except CatalogImportFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        for bar in bars:
            bar.close()
    click.echo(report.text())


@catalog.command("list")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True, help="0: all products.")
def list_(limit: int) -> None:
    """Read products.catalog to its end and print the live products (deleted ones left out)."""
    from streams.sources.catalog_import import CatalogImportFailed, read_live_products

    settings = get_settings()
    require_kafka(settings)
    try:
        products = read_live_products(settings)
    except CatalogImportFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    shown = products if limit == 0 else products[:limit]
    click.echo(f"{'product_id':<14} {'category':<12} {'brand':<12} {'price':>9}  ids")
    for p in shown:
        price = "" if p.price is None else f"{p.price:,.2f}"
        ids = [f"sku:{s}" for s in p.web_skus] + [f"app:{a}" for a in p.app_product_ids]
        ids += [f"ean:{e}" for e in p.eans]
        click.echo(
            f"{p.product_id:<14} {p.category or '':<12} {p.brand or '':<12} {price:>9}  {' '.join(ids)}"
        )
    more = len(products) - len(shown)
    click.echo(f"{len(products):,} products" + (f" ({more:,} not shown; --limit 0 for all)" if more else ""))


@catalog.command("example", hidden=True)
@click.option("--seed", type=int, default=None, help="Simulation seed (default: the demo's).")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Default: the example file.")
def example(seed: int | None, output: Path | None) -> None:
    """Regenerate deploy/examples/catalog.csv from the demo simulation's products."""
    from streams.sources.catalog_import import DEMO_SEED, EXAMPLE_CATALOG, write_example_catalog

    path = write_example_catalog(output or EXAMPLE_CATALOG, DEMO_SEED if seed is None else seed)
    click.echo(f"wrote {path}")
