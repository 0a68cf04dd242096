"""The audience API's destinations: read again when a file changes, at most every check interval; a
set that does not validate leaves the previous one in force with one logged line."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from streams.api.destinations import DestinationRegistry


def _yaml(destination_id: str) -> str:
    digest = hashlib.sha256(destination_id.encode()).hexdigest()
    return f"id: {destination_id}\nkind: generic\napi_key_sha256: {digest}\naudiences: [{{segment: vip}}]\n"


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _touch(path: Path, text: str, clock_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(clock_ns, clock_ns))


def test_files_are_read_again_after_a_change_and_a_check_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _touch(tmp_path / "a.yaml", _yaml("alpha"), 1_000)
    clock = Clock()
    registry = DestinationRegistry(tmp_path, check_every_s=5, clock=clock)
    assert [d.id for d in registry.current()] == ["alpha"] and registry.problem is None

    _touch(tmp_path / "b.yml", _yaml("beta"), 2_000)
    clock.now += 4.9
    assert [d.id for d in registry.current()] == ["alpha"]  # not checked yet
    clock.now += 0.1
    assert [d.id for d in registry.current()] == ["alpha", "beta"]

    caplog.set_level(logging.WARNING, logger="streams.api.destinations")
    _touch(tmp_path / "b.yml", "id: Beta\nkind: nope\n", 3_000)
    clock.now += 5
    assert [d.id for d in registry.current()] == ["alpha", "beta"]  # the previous set stays
    assert registry.problem is not None and "(and " in registry.problem
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "previous destinations in force" in warnings[0] and "\n" not in warnings[0]
    clock.now += 5
    registry.current()
    assert len(caplog.records) == 1  # unchanged files are not read (nor logged) again

    (tmp_path / "b.yml").unlink()
    clock.now += 5
    assert [d.id for d in registry.current()] == ["alpha"] and registry.problem is None


def test_a_missing_directory_serves_no_destination(tmp_path: Path) -> None:
    registry = DestinationRegistry(tmp_path / "none")
    assert registry.current() == () and registry.problem is not None
    assert "not a directory" in registry.problem
