"""The pipeline benchmark's inputs stay valid: 50 definitions that load, and the profile measurement runs."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from streams.bench.measure import interpolated
from streams.bench.probe import write_probe_log
from streams.bench.profiles import measure_profiles
from streams.cli.bench import bench
from streams.dev.workload import bench_definitions
from streams.domain.segments.loader import load_definitions


def test_bench_has_fifty_valid_definitions() -> None:
    definitions = load_definitions([("bench", bench_definitions())])
    assert len(definitions) == 50
    assert {d.kind for d in definitions} == {"segment", "suppression"}


def test_profile_measurement_reports_its_figures() -> None:
    lines: list[str] = []
    result = measure_profiles(200, 3, lines.append)
    assert result["profile_persons"] == 200 and result["engine_applies_per_s_single_thread"] > 0
    assert lines and "profiles: 200 persons" in lines[0]


def test_cpu_between_samples_is_interpolated() -> None:
    samples = [(100.0, {"w": 0.0}), (101.0, {"w": 0.5}), (102.0, {"w": 1.5})]
    assert interpolated(samples, 100.5) == {"w": 0.25}
    assert interpolated(samples, 101.5) == {"w": 1.0}
    assert interpolated(samples, 101.0) == {"w": 0.5}
    assert interpolated(samples, 99.0) == {"w": 0.0}  # before the first sample: the first
    assert interpolated(samples, 105.0) == {"w": 1.5}  # after the last: the last


def test_the_probe_log_lists_every_probe_seen_in_send_order(tmp_path: Path) -> None:
    sent = {"b": 101.0, "a": 100.0, "c": 102.0}
    actual = {"a": 100.001, "b": 101.002}  # "c": not recorded, so its scheduled time stands in
    latency = {"b": 80.5, "a": 250.25, "c": 61.0}
    to_evaluated = {"a": 190.0, "c": 40.5}  # "b": no evaluation time
    path = tmp_path / "probes.tsv"
    write_probe_log(path, sent, actual, latency, to_evaluated)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["scheduled_s", "produced_s", "event_to_change_ms", "send_to_evaluated_ms"]
    assert [line.split("\t") for line in lines[1:]] == [
        ["100.0000", "100.0010", "250.2", "190.0"],
        ["101.0000", "101.0020", "80.5", ""],
        ["102.0000", "102.0000", "61.0", "40.5"],
    ]


def test_a_probe_log_in_a_missing_directory_is_refused_before_the_bench_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, ["pipeline", "--probe-log", str(tmp_path / "missing" / "p.tsv")])
    assert result.exit_code == 2
    assert "--probe-log" in result.output and "does not exist" in result.output
