"""The statistics of a use case measured as an experiment: control versus treatment, from per-arm sums.

Every function is pure and takes the per-arm sums of :mod:`streams.domain.experiments.model`; none of them
sees a person's row. Three kinds of KPI:

- :class:`Proportion` (share of persons with the outcome): two-proportion z-test with the pooled standard
  error for the p-value (the standard error under "no difference", as ``chi2_contingency`` without
  Yates' correction); the confidence interval of the difference uses the unpooled (Wald) standard error,
  because it describes the difference that was observed, not the null.
- :class:`Moments` (mean of a per-person value, e.g. revenue per person): Welch's t-test (the arms may have
  different variances), Welch-Satterthwaite degrees of freedom, t quantile for the interval.
- :class:`RatioMoments` (sum over persons of x over sum of y, e.g. AOV = revenue / orders): the person,
  not the order, is the unit of randomisation, so orders of one person are not independent; the delta
  method gives the ratio's variance from the per-person sums, then a z-test on the difference.

Relative lift (treatment / control - 1) has a delta-method interval: on the log of the ratio for
proportions (rates are positive; the interval stays above -100 % and is less skewed), on the ratio itself
for means and ratios (a mean net of refunds can be 0 or negative, which has no log).

Degenerate arms (no persons, one person, no variance, no denominator) give nan where a figure is undefined;
:func:`compare` never divides by zero and never raises on them. Impossible inputs (a negative count, more
successes than persons, alpha outside (0, 1)) raise ValueError. All results are plain Python floats.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from scipy import special

from streams.domain.experiments.model import (
    Estimate,
    MetricKind,
    Moments,
    Power,
    Proportion,
    RatioMoments,
    Role,
    SampleRatio,
    Stats,
)

NAN = math.nan
_EPS = sys.float_info.epsilon
_MAX_EXP = math.log(sys.float_info.max)


@dataclass(frozen=True)
class Difference:
    """Treatment minus control before alpha is chosen: the arms' values, their variances and the test."""

    kind: MetricKind
    control: float  # the KPI in control: rate, mean or ratio; nan when undefined
    treatment: float
    control_var: float  # variance of the control estimate (not of a person's value); nan when undefined
    treatment_var: float
    statistic: float  # z or t of the test; nan when the test is undefined
    df: float  # degrees of freedom of the t distribution; inf for a z-test

    @property
    def lift(self) -> float:
        return self.treatment - self.control

    @property
    def se(self) -> float:
        """Standard error of the lift for its interval: the arms are independent, so variances add."""
        return _sqrt(self.control_var + self.treatment_var)


def difference(control: Stats, treatment: Stats) -> Difference:
    """The test of treatment minus control for two arms' statistics of the same kind."""
    if isinstance(control, Proportion) and isinstance(treatment, Proportion):
        return _proportions(control, treatment)
    if isinstance(control, Moments) and isinstance(treatment, Moments):
        return _welch(control, treatment)
    if isinstance(control, RatioMoments) and isinstance(treatment, RatioMoments):
        return _ratios(control, treatment)
    raise TypeError(f"arms of different kinds: {type(control).__name__}, {type(treatment).__name__}")


def compare(kpi: str, role: Role, control: Stats, treatment: Stats, alpha: float = 0.05) -> Estimate:
    """One KPI's estimate: lift, its two-sided 1 - alpha interval, relative lift and p-value."""
    _check_probability("alpha", alpha)
    d = difference(control, treatment)
    lift = d.lift
    # Two-sided: alpha / 2 in each tail, for the p-value as for the interval (stdtr with df = inf is
    # the normal distribution, so one formula serves the z- and the t-tests).
    p_value = 2.0 * float(special.stdtr(d.df, -abs(d.statistic))) if d.statistic == d.statistic else NAN
    quantile = float(special.stdtrit(d.df, 1.0 - alpha / 2.0)) if d.df == d.df else NAN
    relative, relative_ci = _relative(d, float(special.ndtri(1.0 - alpha / 2.0)))
    return Estimate(
        kpi=kpi,
        kind=d.kind,
        role=role,
        control=d.control,
        treatment=d.treatment,
        absolute_lift=lift,
        absolute_ci=_interval(lift, d.se, quantile),
        relative_lift=relative,
        relative_ci=relative_ci,
        p_value=p_value,
        alpha=alpha,
    )


def sample_ratio(control: int, treatment: int, control_share: float, threshold: float = 0.001) -> SampleRatio:
    """Sample-ratio mismatch: chi-squared goodness of fit of the arms' sizes to the planned share, 1 df."""
    _check_count("control", control)
    _check_count("treatment", treatment)
    _check_probability("control_share", control_share)
    total = control + treatment
    if total == 0:
        return SampleRatio(control, treatment, control_share, NAN, NAN, threshold)
    expected_control = total * control_share
    expected_treatment = total * (1.0 - control_share)
    # sum over the two cells of (observed - expected)^2 / expected; two cells with a fixed total leave
    # one degree of freedom.
    gap_control, gap_treatment = control - expected_control, treatment - expected_treatment
    chi2 = gap_control * gap_control / expected_control + gap_treatment * gap_treatment / expected_treatment
    return SampleRatio(control, treatment, control_share, chi2, float(special.chdtrc(1, chi2)), threshold)


def needed_sample(
    baseline: float, mde: float, alpha: float, power: float, control_share: float
) -> tuple[int, int]:
    """Persons needed in (control, treatment) to detect a relative lift ``mde`` over the rate ``baseline``."""
    # The two-sided two-proportion z-test as compare() runs it (pooled SE under the null), normal
    # approximation without continuity correction (Fleiss, Tytun and Ury). With k = control share,
    # p1 = baseline, p2 = baseline (1 + mde), N persons in all, n_c = k N and n_t = (1 - k) N, the test
    # rejects when |lift| > z_{1-alpha/2} sqrt(V0 / N), and the lift is normal around p2 - p1 with
    # variance V1 / N; asking that to happen with probability `power` gives
    #     N = (z_{1-alpha/2} sqrt(V0) + z_{power} sqrt(V1))^2 / (p2 - p1)^2
    #     V0 = pbar (1 - pbar) / (k (1 - k)),  pbar = k p1 + (1 - k) p2   (both arms at the pooled rate)
    #     V1 = p1 (1 - p1) / k + p2 (1 - p2) / (1 - k)                     (each arm at its own rate)
    # The far tail (rejecting with the wrong sign) is ignored, as usual. Each arm is rounded up.
    p1, p2 = _planned_rates(baseline, mde)
    _check_probability("alpha", alpha)
    _check_probability("power", power)
    _check_probability("control_share", control_share)
    k = control_share
    pbar = k * p1 + (1.0 - k) * p2
    v0 = pbar * (1.0 - pbar) / (k * (1.0 - k))
    v1 = p1 * (1.0 - p1) / k + p2 * (1.0 - p2) / (1.0 - k)
    z_alpha = float(special.ndtri(1.0 - alpha / 2.0))
    z_power = float(special.ndtri(power))
    # A target power below about alpha / 2 makes the sum negative: any size reaches it.
    root = max(z_alpha * math.sqrt(v0) + z_power * math.sqrt(v1), 0.0)
    total = root * root / ((p2 - p1) * (p2 - p1))
    return max(1, math.ceil(k * total)), max(1, math.ceil((1.0 - k) * total))


def power_reached(baseline: float, mde: float, alpha: float, n_control: int, n_treatment: int) -> float:
    """Power of the two-sided two-proportion z-test at these arm sizes for the planned relative lift."""
    # The inverse of needed_sample(): the test rejects when |lift| > z_{1-alpha/2} SE0, SE0 the pooled SE
    # at pbar (the size-weighted mean of p1 and p2); under the effect the lift is normal around p2 - p1
    # with the unpooled SE1, so power = Phi((|p2 - p1| - z_{1-alpha/2} SE0) / SE1), the far tail ignored.
    # No persons in an arm, no test: 0.
    p1, p2 = _planned_rates(baseline, mde)
    _check_probability("alpha", alpha)
    _check_count("n_control", n_control)
    _check_count("n_treatment", n_treatment)
    if n_control == 0 or n_treatment == 0:
        return 0.0
    pbar = (n_control * p1 + n_treatment * p2) / (n_control + n_treatment)
    se0 = math.sqrt(pbar * (1.0 - pbar) * (1.0 / n_control + 1.0 / n_treatment))
    se1 = math.sqrt(p1 * (1.0 - p1) / n_control + p2 * (1.0 - p2) / n_treatment)
    z_alpha = float(special.ndtri(1.0 - alpha / 2.0))
    return float(special.ndtr((abs(p2 - p1) - z_alpha * se0) / se1))


def plan(
    baseline: float,
    mde: float,
    alpha: float,
    target_power: float,
    control_share: float,
    n_control: int,
    n_treatment: int,
) -> Power:
    """The primary KPI's plan: persons needed at the control share and the power the arms have reached."""
    needed_control, needed_treatment = needed_sample(baseline, mde, alpha, target_power, control_share)
    return Power(
        baseline=baseline,
        minimum_detectable_effect=mde,
        alpha=alpha,
        target_power=target_power,
        needed_control=needed_control,
        needed_treatment=needed_treatment,
        reached=power_reached(baseline, mde, alpha, n_control, n_treatment),
    )


# --- the three tests ------------------------------------------------------------------------------------


def _proportions(control: Proportion, treatment: Proportion) -> Difference:
    for name, arm in (("control", control), ("treatment", treatment)):
        _check_count(f"{name}.n", arm.n)
        if not 0 <= arm.successes <= arm.n:
            raise ValueError(f"{name}: successes {arm.successes} outside 0..{arm.n}")
    c = _div(control.successes, control.n)
    t = _div(treatment.successes, treatment.n)
    # Binomial variance of a rate: p (1 - p) / n.
    control_var = _div(c * (1.0 - c), control.n)
    treatment_var = _div(t * (1.0 - t), treatment.n)
    statistic = NAN
    if control.n > 0 and treatment.n > 0:
        # Under the null both arms share one rate, best estimated from both arms together; the z of this
        # pooled SE squared is the chi-squared statistic of the 2x2 table.
        pooled = (control.successes + treatment.successes) / (control.n + treatment.n)
        se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control.n + 1.0 / treatment.n))
        statistic = _div(t - c, se0)
    return Difference(MetricKind.PROPORTION, c, t, control_var, treatment_var, statistic, math.inf)


def _welch(control: Moments, treatment: Moments) -> Difference:
    _check_count("control.n", control.n)
    _check_count("treatment.n", treatment.n)
    c = _div(control.total, control.n)
    t = _div(treatment.total, treatment.n)
    # Variance of each arm's mean: s^2 / n.
    a = _div(_variance(control), control.n)
    b = _div(_variance(treatment), treatment.n)
    se = _sqrt(a + b)
    statistic = _div(t - c, se)
    df = NAN
    if _finite(statistic):
        # Welch-Satterthwaite: (a + b)^2 / (a^2 / (n_c - 1) + b^2 / (n_t - 1)), written with the shares
        # u = a / (a + b) and w = b / (a + b) so that huge or tiny variances cannot overflow.
        u, w = a / (a + b), b / (a + b)
        df = 1.0 / (u * u / (control.n - 1) + w * w / (treatment.n - 1))
    return Difference(MetricKind.MEAN, c, t, a, b, statistic, df)


def _ratios(control: RatioMoments, treatment: RatioMoments) -> Difference:
    _check_count("control.n", control.n)
    _check_count("treatment.n", treatment.n)
    c = _div(control.num, control.den) if control.n > 0 else NAN
    t = _div(treatment.num, treatment.den) if treatment.n > 0 else NAN
    a = _ratio_variance(control, c)
    b = _ratio_variance(treatment, t)
    # Independent arms: a z-test on the difference with the variances added (n is large for a ratio KPI;
    # the delta method is itself a large-sample approximation, so no t quantile).
    statistic = _div(t - c, _sqrt(a + b))
    return Difference(MetricKind.RATIO, c, t, a, b, statistic, math.inf)


def _variance(arm: Moments) -> float:
    """Sample variance (n - 1) of a per-person value from its sum and sum of squares."""
    if arm.n < 2:
        return NAN
    # sum (v - mean)^2 = sum v^2 - (sum v)^2 / n
    squares = arm.total_sq - arm.total * arm.total / arm.n
    return _clean(squares, arm.total_sq, arm.n) / (arm.n - 1)


def _ratio_variance(arm: RatioMoments, ratio: float) -> float:
    """Delta-method variance of an arm's ratio R = mean(x) / mean(y) over its n persons."""
    # Var(R) ~ (Var(x) - 2 R Cov(x, y) + R^2 Var(y)) / (n mean(y)^2), the first-order Taylor expansion of
    # mean(x) / mean(y); the numerator is the variance of the residual e = x - R y. The residuals sum to
    # 0 (sum x = R sum y), so their sum of squares is sum x^2 - 2 R sum xy + R^2 sum y^2 with no centring,
    # over n - 1; and n mean(y)^2 = den^2 / n. Persons are the unit: a person's orders stay together.
    if arm.n < 2 or not _finite(ratio):
        return NAN
    scale = arm.num_sq + 2.0 * abs(ratio * arm.num_den) + ratio * ratio * arm.den_sq
    squares = arm.num_sq - 2.0 * ratio * arm.num_den + ratio * ratio * arm.den_sq
    residual_var = _clean(squares, scale, arm.n) / (arm.n - 1)
    return _div(residual_var * arm.n, arm.den * arm.den)


def _clean(squares: float, scale: float, n: int) -> float:
    """A sum of squared deviations computed by subtraction, without its rounding noise."""
    # sum v^2 - (sum v)^2 / n loses digits when the values barely vary: it can come out slightly negative,
    # or a few ulps above 0 when every person has the same value (which would make a huge t). Below the
    # worst-case error of summing n floats (n eps relative to the summed squares) it is taken as 0.
    if not math.isfinite(squares):
        return NAN
    return squares if squares > n * _EPS * abs(scale) else 0.0


# --- relative lift and intervals -------------------------------------------------------------------------


def _relative(d: Difference, z: float) -> tuple[float | None, tuple[float, float] | None]:
    """treatment / control - 1 with a delta-method interval; None when control is 0 or undefined."""
    c, t = d.control, d.treatment
    if c == 0 or c != c:
        return None, None
    ratio = t / c
    relative = ratio - 1.0
    if d.kind is MetricKind.PROPORTION:
        if not ratio > 0:
            return relative, (NAN, NAN)
        # log(t / c) = log t - log c; Var(log p) ~ Var(p) / p^2 (delta method), the arms independent.
        # The interval is exp'd back: asymmetric, and never below -100 %.
        se = _sqrt(_div(d.treatment_var, t * t) + _div(d.control_var, c * c))
        low, high = _interval(math.log(ratio), se, z)
        return relative, (_exp(low) - 1.0, _exp(high) - 1.0)
    # Var(t / c) ~ Var(t) / c^2 + t^2 Var(c) / c^4 (first-order Taylor of t / c, the arms independent).
    se = _div(_sqrt(d.treatment_var + ratio * ratio * d.control_var), abs(c))
    return relative, _interval(relative, se, z)


def _interval(centre: float, se: float, quantile: float) -> tuple[float, float]:
    """centre +- quantile * se; nan when the standard error is 0 or undefined (nothing to approximate)."""
    if not (_finite(centre) and _finite(se) and se > 0 and _finite(quantile)):
        return NAN, NAN
    half = quantile * se
    return centre - half, centre + half


# --- small guards ---------------------------------------------------------------------------------------


def _div(numerator: float, denominator: float) -> float:
    """numerator / denominator as a float; nan instead of dividing by 0 or by nan."""
    if denominator == 0 or denominator != denominator:
        return NAN
    return float(numerator / denominator)


def _sqrt(value: float) -> float:
    return math.sqrt(value) if value >= 0 else NAN  # nan (and negative noise) stay undefined


def _exp(value: float) -> float:
    return math.inf if value > _MAX_EXP else math.exp(value)  # nan stays nan


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _planned_rates(baseline: float, mde: float) -> tuple[float, float]:
    _check_probability("baseline", baseline)
    treated = baseline * (1.0 + mde)
    if mde == 0 or not 0 < treated < 1:
        raise ValueError(f"baseline {baseline} with relative effect {mde}: not a different rate in (0, 1)")
    return baseline, treated


def _check_probability(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), not {value}")


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")


def needed_sample_means(
    baseline: float, sd: float, mde: float, alpha: float, power: float, control_share: float
) -> tuple[int, int]:
    """Persons in (control, treatment) for a two-sided test of means to find a relative lift ``mde``
    over ``baseline`` when a person's value has standard deviation ``sd`` in both arms."""
    delta = abs(baseline * mde)
    if not (math.isfinite(sd) and sd > 0 and delta > 0):
        return 0, 0
    k = control_share
    total = ((float(special.ndtri(1.0 - alpha / 2.0)) + float(special.ndtri(power))) * sd / delta) ** 2 * (
        1 / k + 1 / (1 - k)
    )
    return math.ceil(total * k), math.ceil(total * (1 - k))


def power_reached_means(
    baseline: float, sd: float, mde: float, alpha: float, n_control: int, n_treatment: int
) -> float:
    """Power of the test of means at these arm sizes for a relative lift ``mde`` over ``baseline``."""
    if n_control <= 0 or n_treatment <= 0:
        return 0.0
    delta = abs(baseline * mde)
    if not (math.isfinite(sd) and sd > 0):
        return NAN
    se = sd * math.sqrt(1 / n_control + 1 / n_treatment)
    return float(special.ndtr(delta / se - float(special.ndtri(1.0 - alpha / 2.0))))
