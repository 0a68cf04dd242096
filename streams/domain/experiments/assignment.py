"""Control or treatment, decided from (use case id, person id) alone.

The arm is a pure function of the two ids and the control share, so every process (segment stage,
audience writer, a replay, a report) decides the same arm for the same person with no shared state,
across restarts and replays. SHA-256 spreads the ids uniformly; its first 8 bytes, as a fraction of
2**64, fall below the control share for a ``control_share`` fraction of persons.
"""

from __future__ import annotations

import hashlib

from streams.domain.experiments.model import Arm

_SCALE = float(2**64)


def bucket(usecase_id: str, person_id: str) -> float:
    """The person's position in [0, 1) for this use case."""
    digest = hashlib.sha256(f"{usecase_id}\n{person_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def arm(usecase_id: str, person_id: str, control_share: float) -> Arm:
    """The person's arm in the use case: control for a ``control_share`` fraction of persons."""
    return Arm.CONTROL if bucket(usecase_id, person_id) < control_share else Arm.TREATMENT
