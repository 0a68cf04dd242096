"""``omniseg catalog import``: a CSV or JSONL catalog file -> the compacted ``products.catalog`` topic.

The whole file is validated first (:func:`streams.domain.catalog.parse_catalog`); one bad row means
nothing is produced, and the error lists every problem (the first 20 in the message) with file, line and
field. Then every product is produced keyed by its product id and each acknowledgement awaited. With
``delete_missing``, products live in the topic but absent from the file get a ``deleted=true`` record.

Re-importing the same file is harmless: compaction keeps the newest record per product, and the
replicas end in the same state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.domain import simulation
from streams.domain.catalog import CatalogError, CatalogProblem, Product, parse_catalog, render_csv
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.catalog import CatalogReplica
from streams.topics import PRODUCTS_TOPIC
from streams.wire.codecs import PRODUCT_CODEC

Format = Literal["csv", "jsonl"]
# The seed `omniseg demo` uses by default: deploy/examples/catalog.csv holds that stream's products.
DEMO_SEED = 7
EXAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "catalog.csv"
_ACK_TIMEOUT_S = 60.0


class CatalogImportFailed(RuntimeError):
    """The import could not run or finish (broker unreachable, topic missing, records not acknowledged)."""


@dataclass
class ImportReport:
    """What one import did."""

    source: str
    topic: str
    products: int = 0  # products in the file, each produced once
    deleted: list[str] = field(default_factory=list)  # product ids marked deleted (--delete-missing)
    seconds: float = 0.0

    def text(self) -> str:
        """A human summary for the command line."""
        lines = [f"{self.source}: {self.products:,} products to {self.topic} in {self.seconds:.1f} s"]
        if self.deleted:
            shown = ", ".join(self.deleted[:10]) + (" ..." if len(self.deleted) > 10 else "")
            lines.append(f"marked deleted (not in the file): {len(self.deleted):,} ({shown})")
        return "\n".join(lines)


def detect_format(path: Path, explicit: str | None = None) -> Format:
    """``csv`` or ``jsonl``: ``explicit`` if given, else from the file's extension."""
    choice = (explicit or "").lower() or {
        ".csv": "csv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "jsonl",
    }.get(path.suffix.lower(), "")
    if choice == "csv":
        return "csv"
    if choice == "jsonl":
        return "jsonl"
    problem = CatalogProblem(str(path), None, None, "cannot tell the format; use .csv or .jsonl, or --format")
    raise CatalogError([problem])


def read_catalog_file(path: Path, fmt: str | None = None) -> list[Product]:
    """Every product of the file; raises CatalogError naming each problem (nothing partial)."""
    kind = detect_format(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CatalogError([CatalogProblem(str(path), None, None, "no such file")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        problem = CatalogProblem(str(path), line, None, f"not UTF-8 text (byte {exc.start})")
        raise CatalogError([problem]) from exc
    return parse_catalog(text, source=str(path), fmt=kind)


def import_catalog(
    settings: Settings,
    path: Path,
    *,
    fmt: str | None = None,
    delete_missing: bool = False,
    progress: Callable[[int], None] = lambda _n: None,
    now: datetime | None = None,
    connect_timeout_s: float = 10.0,
) -> ImportReport:
    """Validate ``path`` whole, then produce its products (and deletions) and wait for every ack."""
    started = time.monotonic()
    products = read_catalog_file(path, fmt)  # raises before anything is produced
    topic = settings.topic(PRODUCTS_TOPIC.name)
    report = ImportReport(source=str(path), topic=topic)
    producer = Producer(producer_config(settings, "omniseg-catalog-import"))
    _check_topic(producer, settings, topic, connect_timeout_s)
    missing: list[Product] = []
    if delete_missing:
        in_file = {p.product_id for p in products}
        missing = [p for p in read_live_products(settings) if p.product_id not in in_file]
    updated_at = now or datetime.now(UTC)
    failures: list[str] = []
    lock = threading.Lock()

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            with lock:
                failures.append(err.str())
        else:
            progress(1)

    records = [(p, False) for p in products] + [(p, True) for p in missing]
    for product, deleted in records:
        value = PRODUCT_CODEC.encode(product.to_avro(updated_at, deleted=deleted))
        while True:
            try:
                producer.produce(topic, key=product.product_id.encode(), value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
        producer.poll(0)
    remaining = producer.flush(_ACK_TIMEOUT_S)
    if remaining or failures:
        raise CatalogImportFailed(
            f"{remaining} of {len(records)} records were not acknowledged by {settings.kafka_bootstrap} and "
            f"{len(failures)} failed (first: {failures[:1]}); the import is incomplete: run it again "
            "(re-importing a file is harmless)"
        )
    report.products = len(products)
    report.deleted = [p.product_id for p in missing]
    report.seconds = time.monotonic() - started
    return report


def read_live_products(settings: Settings, timeout_s: float = 30.0) -> list[Product]:
    """Every product currently live in the topic (deleted ones left out), by product id."""
    replica = CatalogReplica(settings)
    try:
        replica.load(timeout_s)
    except KafkaException as exc:
        raise CatalogImportFailed(f"cannot read {settings.topic(PRODUCTS_TOPIC.name)}: {exc}") from exc
    except TimeoutError as exc:
        raise CatalogImportFailed(str(exc)) from exc
    finally:
        replica.close()
    return sorted(replica.catalog, key=lambda p: p.product_id)


def _check_topic(producer: Producer, settings: Settings, topic: str, timeout_s: float = 10.0) -> None:
    try:
        topics = producer.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise CatalogImportFailed(
            f"cannot reach Kafka at {settings.kafka_bootstrap} within {timeout_s:.0f} s ({exc}); "
            "is the broker up? (omniseg dev up)"
        ) from exc
    if topic not in topics:
        raise CatalogImportFailed(
            f"topic {topic} does not exist on {settings.kafka_bootstrap}; run omniseg topics create"
        )


def simulated_catalog(seed: int = DEMO_SEED) -> list[Product]:
    """The products of the demo simulation for ``seed`` (prices in GBP, like its events)."""
    return [
        Product(
            product_id=p.product_id,
            name=p.name,
            category=p.category,
            brand=p.brand,
            price=p.price,
            currency="GBP",
            web_skus=(p.web_sku,),
            app_product_ids=(p.app_product_id,),
            eans=(p.ean,),
        )
        for p in simulation.catalog(seed)
    ]


def write_example_catalog(path: Path = EXAMPLE_CATALOG, seed: int = DEMO_SEED) -> Path:
    """Regenerate ``deploy/examples/catalog.csv`` from the simulation (``omniseg catalog example``)."""
    path.write_text(render_csv(simulated_catalog(seed)))
    return path
