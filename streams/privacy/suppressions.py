"""The suppression list: identifiers erased with suppression, as hashes (docs/privacy.md).

:class:`SuppressionList` follows the compacted ``privacy.suppressions`` (written by the link writer at
each erasure) and answers whether an event carries a suppressed identifier. The collector and the
events sink drop such events at intake and count them; the link writer keeps its own copy in its
state. The list holds SHA-256 digests of normalised identifier keys, never an identifier.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.domain.identity import IdentityRules
from streams.domain.privacy import suppressed
from streams.domain.resolution import FastExtractor
from streams.kafka.config import consumer_config
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import Settings
from streams.topics import PRIVACY_SUPPRESSIONS_TOPIC
from streams.wire.identity import EVENT_DECODER, raw_ids

log = logging.getLogger("streams.privacy.suppressions")

_TIMEOUT_S = 60.0


class SuppressionList:
    """The suppressed identifier hashes, loaded from the topic and kept up to date by :meth:`poll`
    (or by a background thread, :meth:`follow`)."""

    def __init__(self, settings: Settings, rules: IdentityRules | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic(PRIVACY_SUPPRESSIONS_TOPIC.name)
        self.keys: set[str] = set()
        self.dropped = 0  # events dropped because they carry a suppressed identifier
        self._rules = rules
        self._extractor: FastExtractor | None = None
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- following the topic ------------------------------------------------------------------------

    def load(self) -> int:
        """Read the topic from the beginning to its end; returns the records read."""
        if self._consumer is not None:  # an earlier load that failed
            self._consumer.close()
        consumer = self._consumer = Consumer(
            consumer_config(
                self.settings,
                f"{self.settings.sink_group}.suppressions",  # assign only, never committed
                "omniseg-suppressions",
                **{"enable.partition.eof": True, "queued.max.messages.kbytes": 1024},
            )
        )
        start = [
            TopicPartition(self.topic, p, OFFSET_BEGINNING)
            for p in partitions_of(consumer, self.topic, _TIMEOUT_S)
        ]
        return read_to_end(consumer, start, self._apply, _TIMEOUT_S)

    def poll(self, limit: int = 1000, wait_s: float = 0.0) -> int:
        """Apply what arrived since (non-blocking by default); returns the records applied."""
        consumer = self._consumer
        if consumer is None:
            return 0
        applied = 0
        for msg in consumer.consume(limit, wait_s):
            if msg.error() is None:
                self._apply(msg)
                applied += 1
        return applied

    def follow(self, interval_s: float = 0.5) -> None:
        """Load and then poll in a daemon thread until :meth:`close`; a failure (the broker away, the
        topic missing) is logged and retried, and until the load succeeds nothing is suppressed here
        (the link writer and the events sink still drop such events)."""

        def run() -> None:
            loaded = False
            try:
                while not self._stop.is_set():
                    try:
                        if not loaded:
                            self.load()
                            loaded = True
                        self.poll(wait_s=interval_s)
                    except Exception as exc:  # a broker hiccup must not end the thread
                        log.warning("suppressions: cannot read %s: %s", self.topic, exc)
                        self._stop.wait(5.0)
            finally:
                self._close_consumer()

        self._thread = threading.Thread(target=run, name="omniseg-suppressions", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop following. The following thread closes its own consumer: one still waiting for an
        unreachable broker is left to end by itself (a daemon) rather than closed under it, which would
        hold up the collector's shutdown for as long as that wait."""
        self._stop.set()
        if self._thread is None:
            self._close_consumer()
        else:
            self._thread.join(5)

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _apply(self, msg: Message) -> None:
        key = (msg.key() or b"").decode()
        with self._lock:
            if msg.value() is None:
                self.keys.discard(key)
            else:
                self.keys.add(key)

    # -- checking events ----------------------------------------------------------------------------

    def _rules_now(self) -> IdentityRules:
        if self._rules is None:
            self._rules = IdentityRules.from_yaml(self.settings.identity_rules_path)
        return self._rules

    def blocks_keys(self, identifier_keys: Iterable[str]) -> bool:
        if not self.keys:
            return False
        if suppressed(identifier_keys, self.keys):
            self.dropped += 1
            return True
        return False

    def blocks_record(self, value: bytes) -> bool:
        """The same for an Avro ``event`` record as it is on a channel topic."""
        if not self.keys:
            return False
        return self.blocks_row(EVENT_DECODER.decode(value))

    def blocks_row(self, row: tuple[Any, ...]) -> bool:
        """The same for an event already decoded by ``streams.wire.row_decoder.EventDecoder``."""
        if not self.keys:
            return False
        if self._extractor is None:
            self._extractor = FastExtractor(self._rules_now())
        values, tracking = raw_ids(row)
        return self.blocks_keys(i.key for i in self._extractor.extract(values, tracking).identifiers)
