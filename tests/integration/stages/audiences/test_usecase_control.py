"""Control groups on the real broker: publishing running use cases takes their control persons out of
every destination's audience of the use case's segment, ``destinations apply`` afterwards keeps them
out, and publishing no use cases brings them back."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.domain.audiences.hashing import AudienceIdKind
from streams.domain.audiences.state import Configuration, MembershipChange, PersonUpdate
from streams.domain.consent import Decision
from streams.domain.experiments.assignment import RunningUseCase
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.audiences.configuration import (
    apply_destinations,
    publish_usecases,
    published_configuration,
)
from streams.stages.audiences.writer import AudienceWriter
from streams.stages.segments.definitions import apply_definitions
from streams.wire.audiences import decode_input, encode_input
from tests.integration.stages.audiences.test_audience_writer import (  # noqa: F401 (running: a fixture)
    Deltas,
    Running,
    running,
)
from tests.integration.stages.audiences.topic_reading import topic_values
from tests.integration.stages.segments.segment_files import write_definitions

pytestmark = pytest.mark.integration

_ADS = f"""
id: ads
kind: meta_custom_audience
api_key_sha256: {"a" * 64}
identifiers: [email]
consent: [advertising]
audiences:
  - segment: buyers
  - segment: browsers
"""
_MAIL = f"""
id: mail
kind: google_customer_match
api_key_sha256: {"b" * 64}
identifiers: [email]
consent: [advertising]
audiences:
  - segment: buyers
"""
PERSONS = [f"p{n}" for n in range(8)]
USECASE = RunningUseCase("uc-it", 1, "buyers", None, 0.5)


def _email(person: str) -> tuple[AudienceIdKind, str]:
    # Meta and Google hash a non-Gmail address alike: trimmed, lower-case, SHA-256.
    return AudienceIdKind.EMAIL, hashlib.sha256(f"{person}@shop.example".encode()).hexdigest()


def _newest_configuration(settings: Settings) -> Configuration:
    item = decode_input(topic_values(settings, "audiences.configuration")[-1])
    assert isinstance(item, Configuration)
    return item


def test_publishing_use_cases_holds_their_control_persons_out_and_destinations_apply_keeps_them_out(
    settings_factory: Callable[..., Settings],
    running: Running,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = settings_factory(audiences_group=f"aud-{uuid.uuid4().hex[:8]}")
    buyers = "id: buyers\nwhen: {event: Order Completed, count: {gte: 1}}\n"
    apply_definitions(
        settings,
        write_definitions(
            tmp_path / "segments",
            {"buyers.yaml": buyers, "browsers.yaml": buyers.replace("buyers", "browsers")},
        ),
    )
    destinations = write_definitions(tmp_path / "destinations", {"ads.yaml": _ADS})
    apply_destinations(settings, destinations)
    control = {p for p in PERSONS if USECASE.is_control(p)}
    treatment = set(PERSONS) - control
    assert control and treatment

    producer = Producer(producer_config(settings, "it-usecase-control"))
    now = datetime.now(UTC)
    for person in PERSONS:
        update = PersonUpdate(
            person,
            {AudienceIdKind.EMAIL: (f"{person}@shop.example",)},
            {"advertising": Decision(True, 1)},
        )
        for item in (
            update,
            MembershipChange(person, "buyers", None, 1),
            MembershipChange(person, "browsers", None, 1),
        ):
            producer.produce(settings.topic("audiences.inputs"), encode_input(item, now), person.encode())
    assert producer.flush(30) == 0
    running.start(AudienceWriter(settings))
    deltas = Deltas(settings)
    everyone = {_email(p) for p in PERSONS}
    deltas.wait(lambda _: deltas.audience("ads", "buyers") == everyone)
    deltas.wait(lambda _: deltas.audience("ads", "browsers") == everyone)

    # Started: the control persons' hashes go from the audience of the covered segment only.
    publish_usecases(settings, (USECASE,))
    held = len(deltas.seen)
    deltas.wait(lambda _: deltas.audience("ads", "buyers") == {_email(p) for p in treatment})
    deltas.settle(1)
    started = deltas.seen[held:]
    assert all(not d.added and d.audience_id == "buyers" for d in started), started
    assert {(d.kind, d.hash) for d in started} == {_email(p) for p in control}
    configuration = _newest_configuration(settings)
    assert configuration.usecases == (USECASE,)
    assert [d.id for d in configuration.destinations] == ["ads"], "the destinations are kept"

    # Destinations applied afterwards keep the use case: the new destination's audience of the
    # covered segment has no control person either, and nothing comes back to the first.
    write_definitions(destinations, {"ads.yaml": _ADS, "mail.yaml": _MAIL})
    lines: list[str] = []
    applied = apply_destinations(settings, destinations, progress=lines.append)
    assert applied.configuration.usecases == (USECASE,)
    assert any(line.startswith("kept") and "uc-it v1" in line for line in lines), lines
    held = len(deltas.seen)
    deltas.wait(lambda _: deltas.audience("mail", "buyers") == {_email(p) for p in treatment})
    deltas.settle(1)
    assert {d.destination_id for d in deltas.seen[held:]} == {"mail"}
    assert all(d.added for d in deltas.seen[held:])
    assert _newest_configuration(settings).usecases == (USECASE,)

    # Stopped (no use case running): the control persons' hashes are added back everywhere.
    publish_usecases(settings, ())
    deltas.wait(
        lambda _: (
            deltas.audience("ads", "buyers") == everyone and deltas.audience("mail", "buyers") == everyone
        )
    )
    final = _newest_configuration(settings)
    assert final.usecases == () and [d.id for d in final.destinations] == ["ads", "mail"]
    assert published_configuration(settings, "it-usecase-control") == final


def test_publishing_use_cases_before_any_destination_publishes_them_with_the_settings_policy(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(consent_defaults={"advertising": True})
    assert published_configuration(settings, "it-usecase-control") is None
    offset = publish_usecases(settings, (USECASE,))
    assert offset == 0
    (value,) = topic_values(settings, "audiences.inputs")
    assert decode_input(value) == Configuration((), settings.consent_policy(), (USECASE,))
    assert topic_values(settings, "audiences.configuration") == [value]
