"""The email-tool example (deploy/examples/email_tool_consumer.py) against the real Tansu broker: it keeps
one segment's changes, once each, commits what it handled, refuses records of an unknown schema, and
stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.topics import SEGMENT_CHANGES_TOPIC
from streams.wire.codecs import HEADER_LEN, SEGMENT_CHANGE_CODEC

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[4] / "deploy" / "examples" / "email_tool_consumer.py"
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def change(
    person: str, segment: str, seq: int, email: str | None = None, consent: bool | None = None
) -> dict[str, Any]:
    """A SegmentChange record as the segment stage writes it (changeId stable per person/segment/seq)."""
    return {
        "changeId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{person}/{segment}/{seq}")),
        "personId": person,
        "segmentId": segment,
        "subject": None,
        "change": "entered" if seq % 2 else "exited",
        "seq": seq,
        "at": AT,
        "trigger": "event" if seq % 2 else "timer",
        "reason": "test",
        "messageId": None,
        "definitionVersion": 3,
        "contacts": {
            "email": email,
            "phone": None,
            "espSubscriberId": None,
            "userId": None,
            "crmId": None,
            "loyaltyCard": None,
        },
        "emittedAt": AT,
        "consent": [] if consent is None else [{"purpose": "email", "granted": consent, "at": AT}],
    }


def produce(settings: Settings, values: Sequence[tuple[str, bytes]]) -> None:
    producer = Producer(producer_config(settings, "email-tool-test"))
    topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
    for key, value in values:
        producer.produce(topic, value, key.encode())
    assert producer.flush(30) == 0


@dataclass
class Run:
    code: int
    lines: list[dict[str, Any]]
    stderr: str


def consumer_argv(settings: Settings, segment: str, group: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--segment",
        segment,
        "--bootstrap",
        settings.kafka_bootstrap,
        "--topic",
        settings.topic(SEGMENT_CHANGES_TOPIC.name),
        "--group",
        group,
        *extra,
    ]


@contextmanager
def started(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """The script as a subprocess; killed by its pid if still running when the block ends."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMNISEG_")}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def run(settings: Settings, segment: str, group: str, *extra: str, timeout_s: float = 90.0) -> Run:
    with started(consumer_argv(settings, segment, group, *extra)) as proc:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    return Run(proc.returncode, [json.loads(line) for line in stdout.splitlines() if line.strip()], stderr)


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


def test_keeps_one_segments_changes_once_each_and_commits(settings: Settings) -> None:
    ann_in = change("p-ann", "prospects", 1, "ann@example.com")
    ann_out = change("p-ann", "prospects", 2, "ann@example.com")
    bob_in = change("p-bob", "prospects", 1, "bob@example.com")
    card_only = change("p-cy", "prospects", 1)  # known by loyalty card only: nobody to email
    produce(
        settings,
        [
            ("p-ann", SEGMENT_CHANGE_CODEC.encode(ann_in)),
            ("p-ann", SEGMENT_CHANGE_CODEC.encode(change("p-ann", "customers", 1, "ann@example.com"))),
            ("p-bob", SEGMENT_CHANGE_CODEC.encode(bob_in)),
            ("p-ann", SEGMENT_CHANGE_CODEC.encode(ann_in)),  # re-published after a worker crash
            ("p-ann", SEGMENT_CHANGE_CODEC.encode(ann_out)),
            ("p-cy", SEGMENT_CHANGE_CODEC.encode(card_only)),
            ("p-bob", SEGMENT_CHANGE_CODEC.encode(change("p-bob", "customers", 1, "bob@example.com"))),
            ("p-bob", SEGMENT_CHANGE_CODEC.encode(bob_in)),  # and again
        ],
    )
    group = f"email-tool-{uuid.uuid4().hex[:8]}"

    first = run(settings, "prospects", group, "--idle-exit", "4")

    assert first.code == 0, first.stderr
    assert sorted(line["changeId"] for line in first.lines) == sorted(
        c["changeId"] for c in (ann_in, ann_out, bob_in, card_only)
    )
    assert {line["segmentId"] for line in first.lines} == {"prospects"}
    by_id = {line["changeId"]: line for line in first.lines}
    assert by_id[ann_in["changeId"]]["action"] == "add_to_list"
    assert by_id[ann_in["changeId"]]["email"] == "ann@example.com"
    assert by_id[ann_out["changeId"]]["action"] == "remove_from_list"
    assert by_id[card_only["changeId"]]["action"] == "none"
    assert by_id[bob_in["changeId"]]["definitionVersion"] == 3
    # one person's changes keep their order (the topic is keyed by person)
    ann = [line["seq"] for line in first.lines if line["personId"] == "p-ann"]
    assert ann == [1, 2]
    assert "2 duplicates dropped" in first.stderr

    again = run(settings, "prospects", group, "--idle-exit", "4")
    assert again.code == 0, again.stderr
    assert again.lines == []  # offsets were committed after handling

    other = run(settings, "customers", f"{group}-customers", "--idle-exit", "4")
    assert sorted(line["personId"] for line in other.lines) == ["p-ann", "p-bob"]
    assert {line["segmentId"] for line in other.lines} == {"customers"}


def test_max_messages_stops_after_that_many_and_the_rest_comes_next_time(settings: Settings) -> None:
    records = [change(f"p-{n}", "lapsed-customers", 1, f"p{n}@example.com") for n in range(3)]
    produce(settings, [("p-one", SEGMENT_CHANGE_CODEC.encode(r)) for r in records])  # one partition
    group = f"email-tool-{uuid.uuid4().hex[:8]}"

    first = run(settings, "lapsed-customers", group, "--max-messages", "2")
    rest = run(settings, "lapsed-customers", group, "--idle-exit", "4")

    assert first.code == 0 and rest.code == 0, first.stderr + rest.stderr
    assert [line["changeId"] for line in first.lines + rest.lines] == [r["changeId"] for r in records]
    assert len(first.lines) == 2


def test_unknown_schema_fingerprint_is_refused_and_not_committed(settings: Settings) -> None:
    good = change("p-ann", "prospects", 1, "ann@example.com")
    encoded = SEGMENT_CHANGE_CODEC.encode(change("p-ann", "prospects", 2, "ann@example.com"))
    foreign = encoded[:2] + bytes(8) + encoded[HEADER_LEN:]  # a writer schema nobody gave this consumer
    produce(settings, [("p-ann", SEGMENT_CHANGE_CODEC.encode(good)), ("p-ann", foreign)])
    group = f"email-tool-{uuid.uuid4().hex[:8]}"

    first = run(settings, "prospects", group, "--idle-exit", "4")
    second = run(settings, "prospects", group, "--idle-exit", "4")

    assert first.code == 2
    assert [line["changeId"] for line in first.lines] == [good["changeId"]]
    assert "schema fingerprint 0000000000000000" in first.stderr
    assert "segment_change.avsc" in first.stderr
    assert second.code == 2 and second.lines == []  # stops at the same record: nothing skipped


def test_ctrl_c_finishes_the_batch_commits_and_leaves(settings: Settings) -> None:
    record = change("p-ann", "prospects", 1, "ann@example.com")
    produce(settings, [("p-ann", SEGMENT_CHANGE_CODEC.encode(record))])
    group = f"email-tool-{uuid.uuid4().hex[:8]}"

    with started(consumer_argv(settings, "prospects", group)) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the change is handled
        assert json.loads(line)["changeId"] == record["changeId"]
        # the handler only sets a flag: the batch still commits before the loop ends
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "1 changes of 'prospects' handled" in stderr

    again = run(settings, "prospects", group, "--idle-exit", "4")
    assert again.lines == []


def test_with_a_consent_purpose_only_persons_who_granted_it_are_added(settings: Settings) -> None:
    yes = change("p-yes", "news", 1, "yes@example.com", consent=True)
    no = change("p-no", "news", 1, "no@example.com", consent=False)
    unsaid = change("p-unsaid", "news", 1, "unsaid@example.com")
    no_out = change("p-no", "news", 2, "no@example.com", consent=False)
    produce(settings, [(c["personId"], SEGMENT_CHANGE_CODEC.encode(c)) for c in (yes, no, unsaid, no_out)])
    group = f"email-tool-{uuid.uuid4().hex[:8]}"

    result = run(settings, "news", group, "--idle-exit", "4", "--consent-purpose", "email")

    assert result.code == 0, result.stderr
    actions = {(line["personId"], line["seq"]): line["action"] for line in result.lines}
    assert actions == {
        ("p-yes", 1): "add_to_list",
        ("p-no", 1): "skip_no_consent",
        ("p-unsaid", 1): "skip_no_consent",  # never said: refused by default, as omniseg
        ("p-no", 2): "remove_from_list",  # removals always go through
    }
