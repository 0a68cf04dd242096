"""The email-tool example's decision per change: control persons of a running use case, and persons
without consent, are not added; removals always go through."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "email_tool_consumer.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("email_tool_consumer", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(change: str, usecases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "changeId": "c1", "personId": "p1", "segmentId": "browsed", "subject": None, "change": change,
        "seq": 1, "at": 0, "trigger": "event", "reason": "r", "definitionVersion": 1,
        "contacts": {"email": "ann@shop.example"}, "consent": [], "usecases": usecases,
    }  # fmt: skip


def test_control_persons_are_not_added_and_treatment_persons_are(example: ModuleType) -> None:
    control = [{"usecaseId": "shoes", "version": 1, "arm": "control"}]
    treatment = [{"usecaseId": "shoes", "version": 1, "arm": "treatment"}]
    assert example.handle(record("entered", control))["action"] == "skip_control_group"
    assert example.handle(record("entered", control))["controlOf"] == ["shoes"]
    assert example.handle(record("entered", treatment))["action"] == "add_to_list"
    assert example.handle(record("entered", []))["action"] == "add_to_list"
    assert example.handle(record("exited", control))["action"] == "remove_from_list"
