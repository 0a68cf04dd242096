"""Segment profiles on disk against profiles in memory: RSS, events/s at a given cache hit rate, the
time to reopen a filled store, and how late deadlines fire for profiles outside the cache.

The segment stage's own store code (:class:`~streams.state.profile_table.DiskProfiles`,
:class:`~streams.state.profile_table.Unsaved`, :class:`~streams.state.timers.DiskTimers`,
``put_record``) runs the engine's work on realistic profiles; Kafka is left out (its cost is the same
in both homes and is measured by ``omniseg bench pipeline``). Each phase runs in a fresh process, so
its RSS is its own.
"""

from __future__ import annotations

import gc
import multiprocessing
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.bench.measure import Report, percentile, rss_bytes
from streams.dev.workload import CATEGORIES, EVENT_NAMES, bench_definitions
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import LineItem, SegmentEvent
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.profile import Profile
from streams.kafka.partitioner import murmur2_partition
from streams.settings import CHANNELS
from streams.state.profile_table import PROFILE, DiskProfiles, Unsaved, key, put_record
from streams.state.rocks import batch, open_store
from streams.state.timers import DiskTimers
from streams.wire.segments import decode_state, encode_state

_PARTITIONS = 4
_TEMPLATES = 2_000  # distinct profiles the filled ones are copies of (each with its own person id)
_EVENTS_PER_PROFILE = 8
_CHECKPOINT_EVENTS = 5_000  # events per checkpoint (the stage writes touched profiles once per one)
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Sessions:
    """The workload: ``concurrent`` shopping sessions at a time, each of about ``events`` events (at
    least one), by a returning person (any profile, uniformly: the cache's worst case) or, for a
    share ``new`` of them, a new visitor."""

    concurrent: int = 20_000
    events: float = 10.0
    new: float = 0.5

    def start(self, rng: random.Random, profiles: int, visitors: Iterator[int]) -> tuple[int, int]:
        number = next(visitors) if rng.random() < self.new else rng.randrange(profiles)
        return number, 1 + int(rng.expovariate(1 / max(self.events - 1, 0.001)))


def _engine() -> SegmentEngine:
    return SegmentEngine([(d, 1) for d in load_definitions([("bench", bench_definitions())])])


def _event(rng: random.Random, person: int, n: int, now: int) -> SegmentEvent:
    name = rng.choice(EVENT_NAMES)
    sku = f"SKU-{(person + n) % 500}"
    return SegmentEvent(
        f"m{person}-{n}-{rng.random()}",
        now - rng.randrange(30 * _DAY_MS),
        name,
        CHANNELS[n % 4],
        device_type="android" if n % 2 else None,
        properties={"category": CATEGORIES[n % 4], "sku": sku},
        lines=(LineItem(sku=sku, quantity=1, unit_price=40.0),) if name == "Order Completed" else (),
        identifiers=(f"email:user{person}@example.com", f"customer_id:C{person}"),
    )


def _person(n: int) -> str:
    return f"person-{n:09d}"


def _partition(person: str) -> int:
    return murmur2_partition(person.encode(), _PARTITIONS)


def _templates(engine: SegmentEngine, now: int) -> list[Profile]:
    rng = random.Random(7)
    out = []
    for t in range(_TEMPLATES):
        profile = Profile(_person(t))
        for n in range(_EVENTS_PER_PROFILE):
            engine.apply(profile, _event(rng, t, n, now), now)
        out.append(profile)
    return out


def _fill(path: str, profiles: int, queue: Any) -> None:
    """Phase 1 (own process): ``profiles`` engine-built profiles into a fresh store."""
    now = int(time.time() * 1000)
    templates = _templates(_engine(), now)
    db = open_store(Path(path))
    started = time.monotonic()
    wb, pending = batch(), 0
    for n in range(profiles):
        profile = templates[n % _TEMPLATES]
        person = profile.person_id = _person(n)
        put_record(wb, _partition(person), person, encode_state(person, profile, None, now))
        pending += 1
        if pending == 20_000:
            db.write(wb)
            wb, pending = batch(), 0
    db.write(wb)
    db.flush()
    filled = time.monotonic()
    db.compact_range(None, None)  # a store that has run a while is compacted in the background
    db.close()
    queue.put({"fill_s": round(filled - started, 1), "compact_s": round(time.monotonic() - filled, 1)})


def _workload(
    path: str, profiles: int, cache: int, events: int, shape: Sessions, on_disk: bool, queue: Any
) -> None:
    """Phase 2 (own process): ``events`` events of shopping sessions (``shape``) on profiles on disk
    behind a cache of ``cache``, or all in memory."""
    gc.set_threshold(50_000, 20, 20)  # as the segment stage's runtime does (StageSpec.gc_young_threshold)
    engine = _engine()
    now = int(time.time() * 1000)
    rng = random.Random(11)
    base = rss_bytes()
    opened = time.monotonic()
    unsaved = Unsaved()
    db = open_store(Path(path))
    table: DiskProfiles | dict[str, Profile]
    if on_disk:
        table = DiskProfiles(db, _partition, cache, unsaved, lambda _p: False)
        table.owned = set(range(_PARTITIONS))
        timers = DiskTimers(db, _partition, table.owned)
    else:  # every profile decoded into a dict, as a restore in memory does
        table = {}
        for profile in _all(db, profiles):
            table[profile.person_id] = profile
    open_s = time.monotonic() - opened
    visitors = iter(range(profiles, profiles * 10))  # new visitors: no profile yet
    sessions = [shape.start(rng, profiles, visitors) for _ in range(shape.concurrent)]
    dirty: set[str] = set()
    started = time.monotonic()
    for n in range(events):
        index = rng.randrange(len(sessions))
        number, left = sessions[index]
        sessions[index] = (number, left - 1) if left > 1 else shape.start(rng, profiles, visitors)
        person = _person(number)
        profile = table.get(person)
        if profile is None:
            profile = table[person] = Profile(person)
        engine.apply(profile, _event(rng, number, n, now), now)
        dirty.add(person)
        if len(dirty) and n % _CHECKPOINT_EVENTS == _CHECKPOINT_EVENTS - 1:
            _checkpoint(table, dirty, unsaved, db if on_disk else None, now)
    _checkpoint(table, dirty, unsaved, db if on_disk else None, now)
    elapsed = time.monotonic() - started
    result: dict[str, Any] = {
        "home": "disk" if on_disk else "memory",
        "open_s": round(open_s, 2),
        "events_per_s": round(events / elapsed),
        "rss_mb": round(rss_bytes() / 1e6),
        "rss_growth_mb": round((rss_bytes() - base) / 1e6),
    }
    if isinstance(table, DiskProfiles):
        result["cache_hit_rate"] = round(1 - table.loads / events, 3)
        result["expiry_lateness_ms"] = _expiry(table, timers, engine, profiles, cache, db)
    db.close()
    queue.put(result)


def _checkpoint(
    table: DiskProfiles | dict[str, Profile], dirty: set[str], unsaved: Unsaved, db: Any, now: int
) -> None:
    """The touched profiles' states are encoded (the changelog records); on disk they are written to
    the store as their acknowledgement would, and the cache is trimmed."""
    for person in dirty:
        value = encode_state(person, table.get(person), None, now)
        if db is not None:
            unsaved.add(person, value, sealing=False)
    dirty.clear()
    if db is None:
        return
    unsaved.close()
    wb = batch()
    for person, record in unsaved.take_oldest().items():
        put_record(wb, _partition(person), person, record)
    db.write(wb)
    assert isinstance(table, DiskProfiles)
    table.evict(lambda _p: False)


def _expiry(
    table: DiskProfiles, timers: DiskTimers, engine: SegmentEngine, profiles: int, cache: int, table_db: Any
) -> dict[str, float]:
    """Deadlines of 2,000 profiles outside the cache, due over 2 s (1,000 a second, far more than
    windows expire in a shop): how late each fires when the timers are checked every 0.2 s
    (segments_timer_interval_s) and its profile is read from disk and evaluated."""
    rng = random.Random(13)
    start = int(time.time() * 1000) + 500
    chosen = {rng.randrange(cache, profiles) for _ in range(2_000)}
    for number in chosen:
        timers.schedule(start + rng.randrange(2_000), _person(number))
    late: list[float] = []
    while len(late) < len(chosen):
        now = int(time.time() * 1000)
        for due, person in timers.due(now):
            profile = table.get(person)
            if profile is not None:
                engine.tick(profile, now)
            late.append(time.time() * 1000 - due)
        table.evict(lambda _p: False)
        time.sleep(0.2)
    wb = batch()
    timers.settle(timers.floors(), wb)  # fired: a later run on the same store starts without them
    table_db.write(wb)
    return {
        "p50": round(percentile(late, 0.5)),
        "p99": round(percentile(late, 0.99)),
        "max": round(max(late)),
    }


def _all(db: Any, profiles: int) -> Any:
    for number in range(profiles):
        person = _person(number)
        value: bytes | None = db.get(key(PROFILE, _partition(person), person))
        if value is not None:
            yield Profile.from_json(decode_state(value)[2])


def _in_process(target: Any, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    try:
        result: dict[str, Any] = queue.get(timeout=7200)
    finally:
        process.join(60)
        if process.is_alive():
            process.kill()
    return result


def run_profile_store_bench(
    directory: Path,
    profiles: int,
    cache: int,
    events: int,
    shape: Sessions,
    memory_profiles: int,
    report: Report,
) -> dict[str, Any]:
    """Fill a store with ``profiles`` profiles, then run the workload on disk; with
    ``memory_profiles`` > 0, also fill one that size and run disk, memory, memory, disk on it (ABBA)."""
    results: dict[str, Any] = {
        "profiles": profiles,
        "cache_profiles": cache,
        "events": events,
        "sessions": asdict(shape),
    }
    big = directory / "big"
    shutil.rmtree(big, ignore_errors=True)
    report(f"filling a store with {profiles:,} profiles ...")
    results["fill"] = _in_process(_fill, str(big), profiles)
    report(f"  {results['fill']}")
    report(f"workload on disk: {events:,} events, cache {cache:,} profiles ...")
    results["disk"] = _in_process(_workload, str(big), profiles, cache, events, shape, True)
    report(f"  {results['disk']}")
    shutil.rmtree(big, ignore_errors=True)
    if memory_profiles:
        small = directory / "small"
        shutil.rmtree(small, ignore_errors=True)
        _in_process(_fill, str(small), memory_profiles)
        runs = []
        for on_disk in (True, False, False, True):
            run = _in_process(_workload, str(small), memory_profiles, cache, events, shape, on_disk)
            report(f"  {memory_profiles:,} profiles, {run['home']}: {run}")
            runs.append(run)
        results["side_by_side"] = runs
        shutil.rmtree(small, ignore_errors=True)
    return results
