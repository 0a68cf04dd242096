"""A use-case report from the arms' sums: every KPI compared, the sample ratio checked, the plan's
power, and the primary KPI's lift as persons accumulate.

Which KPIs are confirmatory is fixed by the registration: the primary KPI, then the guardrails, both
named before the start; every other KPI of :data:`USECASE_KPIS` is reported as exploratory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from streams.domain.experiments import statistics as st
from streams.domain.experiments.kpis import USECASE_KPIS
from streams.domain.experiments.model import (
    Arm,
    ArmSummary,
    CumulativePoint,
    Estimate,
    MetricKind,
    Moments,
    Power,
    Proportion,
    Role,
    UseCaseReport,
)
from streams.domain.experiments.outcomes import ArmDay, kpi_stats, total
from streams.domain.experiments.usecases import UseCase


def summary(sums: ArmDay) -> ArmSummary:
    n = sums.persons
    return ArmSummary(
        arm=sums.arm,
        persons=n,
        conversions=sums.converted,
        conversion_rate=sums.converted / n if n else float("nan"),
        revenue_per_person=sums.revenue / n if n else float("nan"),
        orders=sums.orders,
        aov=sums.order_revenue / sums.orders if sums.orders else float("nan"),
    )


def estimates(usecase: UseCase, control: ArmDay, treatment: ArmDay) -> tuple[Estimate, ...]:
    """Every KPI compared: the primary first, then the guardrails, then the exploratory ones."""
    roles = {usecase.primary_kpi: Role.PRIMARY} | dict.fromkeys(usecase.guardrail_kpis, Role.GUARDRAIL)
    order = [*usecase.kpis(), *(name for name in USECASE_KPIS if name not in roles)]
    return tuple(
        st.compare(
            name,
            roles.get(name, Role.EXPLORATORY),
            kpi_stats(name, control),
            kpi_stats(name, treatment),
            alpha=usecase.significance,
        )
        for name in order
    )


def cumulative(usecase: UseCase, days: Sequence[ArmDay]) -> tuple[CumulativePoint, ...]:
    """The primary KPI's lift over the persons first exposed up to each day."""
    points: list[CumulativePoint] = []
    for day in sorted({d.day for d in days}):
        control, treatment = total(Arm.CONTROL, days, day), total(Arm.TREATMENT, days, day)
        if control.persons < 2 or treatment.persons < 2:
            continue
        estimate = st.compare(
            usecase.primary_kpi,
            Role.PRIMARY,
            kpi_stats(usecase.primary_kpi, control),
            kpi_stats(usecase.primary_kpi, treatment),
            alpha=usecase.significance,
        )
        low, high = estimate.absolute_ci
        points.append(
            CumulativePoint(day, control.persons, treatment.persons, estimate.absolute_lift, low, high)
        )
    return tuple(points)


def plan(
    usecase: UseCase, baseline: float, baseline_sd: float | None, n_control: int, n_treatment: int
) -> Power:
    """Persons needed per arm to find the minimum detectable effect on the primary KPI, and the power
    the current arm sizes give.

    ``baseline``: the primary KPI's value without personalisation. A proportion's spread follows from
    it; a mean or ratio needs ``baseline_sd``, the per-person standard deviation (measured)."""
    kind = USECASE_KPIS[usecase.primary_kpi].kind
    mde, alpha, power, share = (
        usecase.minimum_detectable_effect,
        usecase.significance,
        usecase.power,
        usecase.control_share,
    )
    if kind is MetricKind.PROPORTION:
        if not 0 < baseline * (1 + mde) < 1 or not 0 < baseline < 1:  # no baseline yet (nan), or no rate
            return Power(baseline, mde, alpha, power, 0, 0, float("nan"))
        needed = st.needed_sample(baseline, mde, alpha, power, share)
        reached = st.power_reached(baseline, mde, alpha, n_control, n_treatment)
    else:
        sd = baseline_sd if baseline_sd is not None else float("nan")
        needed = st.needed_sample_means(baseline, sd, mde, alpha, power, share)
        reached = st.power_reached_means(baseline, sd, mde, alpha, n_control, n_treatment)
    return Power(baseline, mde, alpha, power, needed[0], needed[1], reached)


def baseline_of(usecase: UseCase, sums: ArmDay) -> tuple[float, float | None]:
    """The primary KPI's value (and per-person standard deviation, for a mean or ratio) in ``sums``."""
    stats = kpi_stats(usecase.primary_kpi, sums)
    if isinstance(stats, Proportion):
        return (stats.successes / stats.n if stats.n else float("nan")), None
    if isinstance(stats, Moments):
        if stats.n < 2:
            return float("nan"), None
        mean = stats.total / stats.n
        variance = max((stats.total_sq - stats.total * mean) / (stats.n - 1), 0.0)
        return mean, variance**0.5
    if stats.den <= 0 or stats.n < 2:
        return float("nan"), None
    ratio = stats.num / stats.den
    # The spread of a person's contribution to the ratio, x - R * y, over the mean denominator.
    n = stats.n
    var_x = (stats.num_sq - stats.num**2 / n) / (n - 1)
    var_y = (stats.den_sq - stats.den**2 / n) / (n - 1)
    cov = (stats.num_den - stats.num * stats.den / n) / (n - 1)
    spread = max(var_x - 2 * ratio * cov + ratio**2 * var_y, 0.0) ** 0.5 / (stats.den / n)
    return ratio, spread


def build(
    usecase: UseCase,
    version: int,
    started_at: datetime,
    stopped_at: datetime | None,
    days: Sequence[ArmDay],
    contaminated: int,
    generated_at: datetime,
) -> UseCaseReport:
    """The report of one version of a use case from its arms' sums per day of first exposure."""
    control, treatment = total(Arm.CONTROL, days), total(Arm.TREATMENT, days)
    if usecase.baseline is not None:
        baseline, spread = usecase.baseline, baseline_of(usecase, control)[1]
    else:
        baseline, spread = baseline_of(usecase, control)
    return UseCaseReport(
        usecase_id=usecase.id,
        version=version,
        hypothesis=usecase.hypothesis,
        audience=str(usecase.audience),
        started_at=started_at,
        stopped_at=stopped_at,
        attribution_window_days=usecase.attribution_window_days,
        control_share=usecase.control_share,
        alpha=usecase.significance,
        arms=(summary(control), summary(treatment)),
        estimates=estimates(usecase, control, treatment),
        sample_ratio=st.sample_ratio(control.persons, treatment.persons, usecase.control_share),
        power=plan(usecase, baseline, spread, control.persons, treatment.persons),
        cumulative=cumulative(usecase, days),
        contaminated=contaminated,
        generated_at=generated_at,
    )
