"""The figures of a use-case report, as plain values (no ClickHouse, no rendering).

Per arm, every KPI is reduced in ClickHouse to *sufficient statistics* (counts, sums, sums of squares
and cross products over persons), so a report over a million exposures moves a few numbers, not rows.
``statistics.py`` turns two arms' statistics into an :class:`Estimate`; ``report.py`` assembles a
:class:`UseCaseReport`; renderers (text, HTML) read only these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum


class Arm(StrEnum):
    CONTROL = "control"
    TREATMENT = "treatment"


class MetricKind(StrEnum):
    PROPORTION = "proportion"  # share of persons with the outcome: two-proportion z-test
    MEAN = "mean"  # mean of a per-person value: Welch's t-test
    RATIO = "ratio"  # sum of a per-person numerator over a sum of a denominator: delta method


class Role(StrEnum):
    PRIMARY = "primary"  # the one KPI named before the start; the verdict is about it alone
    GUARDRAIL = "guardrail"  # named before the start; must not get worse
    EXPLORATORY = "exploratory"  # not pre-registered: a lead, never a result


@dataclass(frozen=True)
class Proportion:
    """n persons, of whom ``successes`` had the outcome."""

    n: int
    successes: int


@dataclass(frozen=True)
class Moments:
    """A per-person value over n persons: its sum and its sum of squares."""

    n: int
    total: float
    total_sq: float


@dataclass(frozen=True)
class RatioMoments:
    """Per person a numerator x (e.g. revenue) and a denominator y (e.g. orders): the ratio is
    sum(x) / sum(y), over n persons."""

    n: int
    num: float
    den: float
    num_sq: float
    den_sq: float
    num_den: float


Stats = Proportion | Moments | RatioMoments


@dataclass(frozen=True)
class Estimate:
    """One KPI compared between the arms: treatment minus control."""

    kpi: str
    kind: MetricKind
    role: Role
    control: float  # the KPI's value in control (rate, mean or ratio); nan when it has no persons
    treatment: float
    absolute_lift: float  # treatment - control
    absolute_ci: tuple[float, float]  # two-sided, at 1 - alpha
    relative_lift: float | None  # treatment / control - 1; None when control is 0
    relative_ci: tuple[float, float] | None
    p_value: float  # two-sided; nan when the test is undefined (an arm empty, no variance)
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value == self.p_value and self.p_value < self.alpha

    @property
    def preregistered(self) -> bool:
        return self.role is not Role.EXPLORATORY


@dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio-mismatch check: are the arms' sizes what the control share predicts?"""

    control: int
    treatment: int
    expected_control_share: float
    chi2: float
    p_value: float
    threshold: float = 0.001

    @property
    def mismatch(self) -> bool:
        return self.p_value == self.p_value and self.p_value < self.threshold


@dataclass(frozen=True)
class Power:
    """The plan for the primary KPI and how far the data has come."""

    baseline: float  # the control value the plan assumed (or measured)
    minimum_detectable_effect: float  # relative, e.g. 0.05 for +5 %
    alpha: float
    target_power: float  # e.g. 0.8
    needed_control: int  # persons needed in control ...
    needed_treatment: int  # ... and in treatment, at the use case's control share
    reached: float  # power at the current arm sizes for the planned effect


@dataclass(frozen=True)
class ArmSummary:
    arm: Arm
    persons: int
    conversions: int  # persons with at least one order in their window
    conversion_rate: float
    revenue_per_person: float
    orders: int
    aov: float  # revenue / orders; nan without orders


@dataclass(frozen=True)
class CumulativePoint:
    """The primary KPI's lift over the persons exposed up to ``day`` (a chart point)."""

    day: date
    control: int
    treatment: int
    absolute_lift: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class UseCaseReport:
    usecase_id: str
    version: int
    hypothesis: str
    audience: str  # the segment (and subject) the arms come from, for people
    started_at: datetime
    stopped_at: datetime | None
    attribution_window_days: int
    control_share: float
    alpha: float
    arms: tuple[ArmSummary, ArmSummary]  # control, treatment
    estimates: tuple[Estimate, ...]  # primary first, then guardrails, then exploratory
    sample_ratio: SampleRatio
    power: Power
    cumulative: tuple[CumulativePoint, ...]
    contaminated: int  # persons excluded because a merge joined persons of both arms
    generated_at: datetime

    @property
    def primary(self) -> Estimate:
        return next(e for e in self.estimates if e.role is Role.PRIMARY)
