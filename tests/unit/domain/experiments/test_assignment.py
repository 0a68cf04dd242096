"""Arms are a pure function of (use case, person) and split persons at the control share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.experiments.assignment import arm, bucket
from streams.domain.experiments.model import Arm


@given(st.text(min_size=1), st.text(min_size=1), st.floats(0.05, 0.5))
def test_the_arm_is_stable_and_follows_the_bucket(usecase: str, person: str, share: float) -> None:
    assert arm(usecase, person, share) == arm(usecase, person, share)
    assert 0.0 <= bucket(usecase, person) < 1.0
    assert (arm(usecase, person, share) is Arm.CONTROL) == (bucket(usecase, person) < share)


def test_control_gets_its_share_and_use_cases_split_independently() -> None:
    persons = [f"p{i}" for i in range(40_000)]
    a = [arm("uc-a", p, 0.1) is Arm.CONTROL for p in persons]
    b = [arm("uc-b", p, 0.1) is Arm.CONTROL for p in persons]
    # 40,000 persons at 10 %: sd = 60; 4 sd either side.
    assert 3_760 <= sum(a) <= 4_240 and 3_760 <= sum(b) <= 4_240
    both = sum(x and y for x, y in zip(a, b, strict=True))
    assert 300 <= both <= 500  # independent: about 1 % of persons are control in both


def test_a_known_assignment_never_changes() -> None:
    # Pinned: a change of the hash or its input would reshuffle every running use case's arms.
    assert [arm("shoes-reminder", f"person-{i}", 0.5).value for i in range(6)] == PINNED


PINNED = ["treatment", "control", "treatment", "treatment", "treatment", "control"]
