"""A read-only replica of the compacted ``products.catalog`` topic as a :class:`Catalog`.

Every worker that enriches events keeps one: :meth:`CatalogReplica.load` reads all partitions from the
beginning (assign only, no consumer group, nothing committed) and :meth:`CatalogReplica.poll` applies what
arrived since without blocking, so a catalog import reaches running workers with no restart.

Order: a product's records share a key, hence a partition, so each product's versions arrive in order.
Across products, the order in which partitions are read is arbitrary; it matters only when two live
products claim one channel id (the newest claim wins). :meth:`load` therefore keeps the newest record
per product and applies them by ``updatedAt``, so every replica resolves such a claim the same way
however the partitions were interleaved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, Message, TopicPartition

from streams.domain.catalog import Catalog, Product
from streams.kafka.config import consumer_config
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import Settings
from streams.topics import PRODUCTS_TOPIC
from streams.wire.codecs import PRODUCT_CODEC, SerializationError

log = logging.getLogger("streams.stages.segments.catalog")

_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class ProductVersion:
    """One decoded ``products.catalog`` record."""

    product: Product
    deleted: bool
    updated_at_ms: int


def decode_product(value: bytes) -> ProductVersion:
    """The product, deletion flag and update time of one record; raises SerializationError."""
    record = PRODUCT_CODEC.decode(value)
    try:
        product = Product.from_avro(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"unusable product record: {exc!r}") from exc
    updated = record.get("updatedAt")
    updated_ms = int(updated.timestamp() * 1000) if isinstance(updated, datetime) else int(updated or 0)
    return ProductVersion(product, bool(record.get("deleted")), updated_ms)


class CatalogReplica:
    """The live products of ``products.catalog``; :attr:`catalog` answers lookups."""

    def __init__(self, settings: Settings) -> None:
        self.catalog = Catalog()
        self.records = 0  # records applied since start (load and poll)
        self._topic = settings.topic(PRODUCTS_TOPIC.name)
        self._consumer = Consumer(
            consumer_config(
                settings,
                group=f"{settings.topic_prefix}omniseg.catalog-replica",  # never joined: assign only
                client_id="omniseg-catalog-replica",
                # Rarely written: a slow poll costs the broker little (Tansu holds an empty fetch this long).
                **{
                    "enable.partition.eof": True,
                    "queued.max.messages.kbytes": 4096,
                    "fetch.wait.max.ms": 250,
                },
            )
        )

    def load(self, timeout_s: float = _READ_TIMEOUT_S) -> int:
        """Read the topic from the beginning to its end into :attr:`catalog`; returns the records read."""
        partitions = partitions_of(self._consumer, self._topic, timeout_s)
        start = [TopicPartition(self._topic, p, -2) for p in partitions]  # -2: OFFSET_BEGINNING
        newest: dict[str, ProductVersion] = {}

        def keep(msg: Message) -> None:
            version = self._decode(msg)
            if version is not None:
                newest[version.product.product_id] = version  # later in its partition = newer

        read = read_to_end(self._consumer, start, keep, timeout_s)
        for version in sorted(newest.values(), key=lambda v: (v.updated_at_ms, v.product.product_id)):
            self._apply(version)
        self.records += read
        return read

    def poll(self, limit: int = 1_000) -> int:
        """Apply the records that arrived since (non-blocking); returns how many were applied."""
        applied = 0
        for msg in self._consumer.consume(limit, 0):
            if msg.error() is not None:
                continue  # partition EOF, or a transient error librdkafka retries itself
            version = self._decode(msg)
            if version is not None:
                self._apply(version)
                applied += 1
        self.records += applied
        return applied

    def close(self) -> None:
        """Close the consumer (the catalog stays readable)."""
        self._consumer.close()

    def _decode(self, msg: Message) -> ProductVersion | None:
        key, value = msg.key(), msg.value()
        if value is None:  # a tombstone (compaction's delete) removes its product, like deleted=true
            if key is None:
                return None
            return ProductVersion(Product(key.decode(errors="replace")), deleted=True, updated_at_ms=0)
        try:
            return decode_product(value)
        except SerializationError as exc:
            log.error(
                "catalog replica: skipping undecodable record %s[%s]@%s (key %r): %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                (key or b"")[:80],
                exc,
            )
            return None

    def _apply(self, version: ProductVersion) -> None:
        if version.deleted:
            self.catalog.remove(version.product.product_id)
        else:
            self.catalog.upsert(version.product)
