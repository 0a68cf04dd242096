"""``omniseg destinations apply`` on the real broker: the example destinations validate against the live
example segments and land on audiences.configuration and audiences.inputs as one configuration; a file
naming a segment that is not live is refused in one line per problem and publishes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.domain.audiences.state import Configuration
from streams.settings import Settings
from streams.stages.segments.definitions import apply_definitions
from streams.wire.audiences import decode_input
from tests.integration.stages.audiences.topic_reading import topic_values

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[4] / "deploy"


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "destinations", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _inputs(settings: Settings) -> list[bytes]:
    return topic_values(settings, "audiences.inputs")


def test_apply_publishes_the_examples_and_refuses_unknown_segments(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    apply_definitions(settings, DEPLOY / "segments")

    dry = _cli(settings, "apply", "--dry-run", str(DEPLOY / "destinations"))
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing published" in dry.stderr
    assert _inputs(settings) == []

    applied = _cli(settings, "apply", str(DEPLOY / "destinations"))
    assert applied.returncode == 0, applied.stderr
    assert "published (audiences.inputs offset 0)" in applied.stderr
    (value,) = _inputs(settings)
    configuration = decode_input(value)
    assert isinstance(configuration, Configuration)
    assert {d.id for d in configuration.destinations} == {"google-ads", "meta-ads"}
    assert topic_values(settings, "audiences.configuration") == [value], "what segment workers follow"

    broken = tmp_path / "destinations"
    broken.mkdir()
    text = (DEPLOY / "destinations" / "meta_ads.yaml").read_text()
    (broken / "meta.yaml").write_text(text.replace("segment: lapsed-customers", "segment: no-such-segment"))
    refused = _cli(settings, "apply", str(broken))
    assert refused.returncode == 2
    problems = [line for line in refused.stderr.splitlines() if "no-such-segment" in line]
    assert len(problems) == 1 and "meta.yaml" in problems[0], refused.stderr
    assert len(_inputs(settings)) == 1, "nothing more was published"
