"""Two segment workers killed in turn (``kill -9``) while events arrive and windows expire: the
memberships published on ``segments.changes`` end equal to a fresh evaluation of the events, and every
membership's changes alternate with consecutive ``seq`` (a replayed change repeats its ``changeId``)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.definitions import apply_definitions
from tests.integration.faults.conftest import Worker
from tests.integration.stages.segments.segment_files import write_definitions
from tests.integration.stages.segments.test_segment_stage import Changes, Clock, _resolved

pytestmark = pytest.mark.integration

WINDOW_S = 12
DEFINITIONS = {
    "recent.yaml": f"id: recent\nwhen: {{event: Order Completed, window: {WINDOW_S}s}}\n",
    "loyal.yaml": "id: loyal\nwhen: {event: Order Completed, count: {gte: 3}}\n",
}
PERSONS = 60


@pytest.mark.parametrize("home", ["memory", "disk"])
def test_workers_killed_in_turn_while_windows_expire_agree_with_a_fresh_evaluation(
    fault_settings: Settings, worker_factory: Callable[..., Worker], tmp_path: Path, home: str
) -> None:
    """On disk, each worker keeps its store directory across its kill and restart (the same disk)."""
    settings = fault_settings
    apply_definitions(settings, write_definitions(tmp_path / "segments", DEFINITIONS))
    extra = {
        "OMNISEG_SINK_ENABLED": "false",
        "OMNISEG_IDENTITY_ENABLED": "false",
        # Checkpoints only when the input pauses or after 20 s: a kill lands between the changes
        # a worker published and its next state save.
        "OMNISEG_SEGMENTS_STATE_FLUSH_S": "20",
        "OMNISEG_STAGE_STALL_S": "45",
    }
    envs = [dict(extra) for _ in range(2)]
    if home == "disk":
        for index, env in enumerate(envs):
            env["OMNISEG_STATE_DIR"] = str(tmp_path / f"state-{index}")
    workers = [worker_factory(settings, extra_env=envs[index]) for index in range(2)]
    run = uuid.uuid4().hex[:6]
    persons = [f"p{run}-{n}" for n in range(PERSONS)]
    orders: Counter[str] = Counter()
    stop = threading.Event()
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            producer = Producer(producer_config(settings, "it-segment-crashes"))
            topic, rng, clock, n = settings.topic("events.resolved"), random.Random(7), Clock(), 0
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                person = rng.choice(persons)
                n += 1
                producer.produce(topic, _resolved(person, n, clock), person.encode())
                orders[person] += 1
                producer.poll(0)
                time.sleep(0.05)
            assert producer.flush(30) == 0
        except BaseException as exc:
            failures.append(exc)

    changes = Changes(settings)
    sender = threading.Thread(target=produce, daemon=True)
    sender.start()
    try:
        time.sleep(8)
        for index in (0, 1):  # each worker in turn: killed, started again
            workers[index].kill()
            time.sleep(4)
            workers[index] = worker_factory(settings, extra_env=envs[index])
            time.sleep(8)
    finally:
        stop.set()
        sender.join(60)
    assert not failures, failures
    last_order = time.monotonic()

    expected = {(person, "loyal") for person, count in orders.items() if count >= 3}

    def members() -> set[tuple[str, str]]:
        newest: dict[tuple[str, str], dict[str, object]] = {}
        for change in changes.seen:
            key = (str(change["personId"]), str(change["segmentId"]))
            known = newest.get(key)
            if known is None or int(change["seq"]) > int(str(known["seq"])):  # type: ignore[arg-type]
                newest[key] = change
        return {key for key, change in newest.items() if change["change"] == "entered"}

    # Every window has passed once WINDOW_S is over since the last order (plus the timer interval).
    deadline = last_order + WINDOW_S + 60
    while time.monotonic() < deadline:
        changes.settle(1)
        if time.monotonic() > last_order + WINDOW_S + 2 and members() == expected:
            break
    found = members()
    stale = sorted(key for key in found - expected)
    missing = sorted(key for key in expected - found)
    logs = "\n".join(worker.tail() for worker in workers)
    assert not stale and not missing, f"stale memberships {stale[:5]}, missing {missing[:5]}\n{logs}"

    by_key: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for change in changes.seen:
        key = (str(change["personId"]), str(change["segmentId"]))
        seq = int(change["seq"])  # type: ignore[arg-type]
        previous = by_key[key].setdefault(str(change["changeId"]), seq)
        assert previous == seq, f"one changeId, two seqs: {key}"
    for key, ids in by_key.items():
        seqs = sorted(ids.values())
        assert seqs == list(range(1, len(seqs) + 1)), f"{key}: seqs {seqs} are not consecutive"
    if home == "disk":
        assert all(any((tmp_path / f"state-{i}").rglob("CURRENT")) for i in (0, 1)), "no store on disk"
