"""The statistics of a use case: treatment against control on every KPI, from sufficient statistics.

- Proportions (conversion rate): two-proportion z-test with the pooled standard error for the p-value
  (the null says both arms share one rate), the unpooled (Wald) standard error for the interval of the
  difference. Equal to a chi-squared test of the 2x2 table without continuity correction.
- Means (revenue per person): Welch's t-test, which does not assume equal variances (revenue is
  skewed and personalisation changes its spread), with Welch-Satterthwaite degrees of freedom.
- Ratios (AOV = revenue of orders / orders, per arm): the delta method. Persons, not orders, are the
  independent units, so the ratio's variance comes from the per-person numerator and denominator:
  Var(R) ~ (Var(x) - 2 R Cov(x, y) + R^2 Var(y)) / (n * mean(y)^2).
- Relative lift t/c - 1 gets its interval by the delta method on the ratio t/c (both arms independent):
  Var(t/c) ~ (Var(t) + (t/c)^2 Var(c)) / c^2.
- Sample ratio mismatch: chi-squared goodness of fit of the arm sizes to the control share.
- Sample size and power: the normal approximation for a two-sided test at the planned relative effect.

Undefined figures (an empty arm, no variance, no orders) are nan, never an exception.
"""

from __future__ import annotations

import math

from scipy import stats as scipy_stats

from streams.domain.experiments.model import (
    Estimate,
    MetricKind,
    Moments,
    Proportion,
    RatioMoments,
    Role,
    SampleRatio,
    Stats,
)

NAN = float("nan")


def _z(alpha: float) -> float:
    return float(scipy_stats.norm.ppf(1 - alpha / 2))


def _normal_p(z: float) -> float:
    return float(2 * scipy_stats.norm.sf(abs(z))) if math.isfinite(z) else NAN


def _variance(n: int, total: float, total_sq: float) -> float:
    """Sample variance (n - 1) from sums; rounding can make it a hair below zero."""
    if n < 2:
        return NAN
    return max((total_sq - total * total / n) / (n - 1), 0.0)


def _relative(
    control: float, treatment: float, var_control: float, var_treatment: float, z: float
) -> tuple[float | None, tuple[float, float] | None]:
    """treatment / control - 1 and its interval (delta method), None when control is 0 or undefined."""
    if not math.isfinite(control) or control == 0 or not math.isfinite(treatment):
        return None, None
    ratio = treatment / control
    se = math.sqrt(var_treatment + ratio * ratio * var_control) / abs(control)
    if not math.isfinite(se):
        return ratio - 1, (NAN, NAN)
    return ratio - 1, (ratio - 1 - z * se, ratio - 1 + z * se)


def _estimate(
    kpi: str,
    kind: MetricKind,
    role: Role,
    control: float,
    treatment: float,
    var_control: float,
    var_treatment: float,
    p_value: float,
    alpha: float,
    quantile: float,
) -> Estimate:
    """An Estimate from each arm's value and the variance of that value (its squared standard error)."""
    diff = treatment - control
    se = math.sqrt(var_control + var_treatment) if var_control >= 0 and var_treatment >= 0 else NAN
    ci = (diff - quantile * se, diff + quantile * se) if math.isfinite(se) else (NAN, NAN)
    relative, relative_ci = _relative(control, treatment, var_control, var_treatment, _z(alpha))
    return Estimate(
        kpi=kpi,
        kind=kind,
        role=role,
        control=control,
        treatment=treatment,
        absolute_lift=diff,
        absolute_ci=ci,
        relative_lift=relative,
        relative_ci=relative_ci,
        p_value=p_value,
        alpha=alpha,
    )


def _proportions(kpi: str, role: Role, c: Proportion, t: Proportion, alpha: float) -> Estimate:
    if c.n == 0 or t.n == 0:
        pc = c.successes / c.n if c.n else NAN
        pt = t.successes / t.n if t.n else NAN
        return _estimate(kpi, MetricKind.PROPORTION, role, pc, pt, NAN, NAN, NAN, alpha, _z(alpha))
    pc, pt = c.successes / c.n, t.successes / t.n
    pooled = (c.successes + t.successes) / (c.n + t.n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / c.n + 1 / t.n))
    p_value = _normal_p((pt - pc) / se_pooled) if se_pooled > 0 else NAN
    var_c, var_t = pc * (1 - pc) / c.n, pt * (1 - pt) / t.n
    return _estimate(kpi, MetricKind.PROPORTION, role, pc, pt, var_c, var_t, p_value, alpha, _z(alpha))


def _means(kpi: str, role: Role, c: Moments, t: Moments, alpha: float) -> Estimate:
    mc = c.total / c.n if c.n else NAN
    mt = t.total / t.n if t.n else NAN
    var_c = _variance(c.n, c.total, c.total_sq) / c.n if c.n else NAN
    var_t = _variance(t.n, t.total, t.total_sq) / t.n if t.n else NAN
    se2 = var_c + var_t
    if not math.isfinite(se2) or se2 <= 0:
        return _estimate(kpi, MetricKind.MEAN, role, mc, mt, var_c, var_t, NAN, alpha, _z(alpha))
    # Welch-Satterthwaite degrees of freedom.
    spread = var_c * var_c / (c.n - 1) + var_t * var_t / (t.n - 1)
    df = se2 * se2 / spread if spread > 0 else math.inf  # underflow: as good as the normal
    statistic = (mt - mc) / math.sqrt(se2)
    p_value = float(2 * scipy_stats.t.sf(abs(statistic), df))
    quantile = float(scipy_stats.t.ppf(1 - alpha / 2, df))
    return _estimate(kpi, MetricKind.MEAN, role, mc, mt, var_c, var_t, p_value, alpha, quantile)


def ratio_variance(arm: RatioMoments) -> tuple[float, float]:
    """The arm's ratio sum(x) / sum(y) and the variance of that ratio (delta method over persons)."""
    if arm.n < 2 or arm.den <= 0:
        return (arm.num / arm.den if arm.den > 0 else NAN), NAN
    n = arm.n
    ratio = arm.num / arm.den
    mean_y = arm.den / n
    var_x = _variance(n, arm.num, arm.num_sq)
    var_y = _variance(n, arm.den, arm.den_sq)
    cov = (arm.num_den - arm.num * arm.den / n) / (n - 1)
    variance = max(var_x - 2 * ratio * cov + ratio * ratio * var_y, 0.0) / (n * mean_y * mean_y)
    return ratio, variance


def _ratios(kpi: str, role: Role, c: RatioMoments, t: RatioMoments, alpha: float) -> Estimate:
    rc, var_c = ratio_variance(c)
    rt, var_t = ratio_variance(t)
    se2 = var_c + var_t
    p_value = _normal_p((rt - rc) / math.sqrt(se2)) if math.isfinite(se2) and se2 > 0 else NAN
    return _estimate(kpi, MetricKind.RATIO, role, rc, rt, var_c, var_t, p_value, alpha, _z(alpha))


def compare(kpi: str, role: Role, control: Stats, treatment: Stats, alpha: float = 0.05) -> Estimate:
    """Treatment against control on one KPI; both arms must carry the same kind of statistics."""
    if isinstance(control, Proportion) and isinstance(treatment, Proportion):
        return _proportions(kpi, role, control, treatment, alpha)
    if isinstance(control, Moments) and isinstance(treatment, Moments):
        return _means(kpi, role, control, treatment, alpha)
    if isinstance(control, RatioMoments) and isinstance(treatment, RatioMoments):
        return _ratios(kpi, role, control, treatment, alpha)
    raise TypeError(
        f"{kpi}: the arms' statistics differ in kind ({type(control).__name__}, {type(treatment).__name__})"
    )


def sample_ratio(control: int, treatment: int, control_share: float, threshold: float = 0.001) -> SampleRatio:
    """Chi-squared goodness of fit (1 df) of the arm sizes to the control share."""
    total = control + treatment
    if total == 0:
        return SampleRatio(control, treatment, control_share, NAN, NAN, threshold)
    expected_c, expected_t = total * control_share, total * (1 - control_share)
    chi2 = (control - expected_c) ** 2 / expected_c + (treatment - expected_t) ** 2 / expected_t
    return SampleRatio(
        control, treatment, control_share, chi2, float(scipy_stats.chi2.sf(chi2, 1)), threshold
    )


def needed_sample(
    baseline: float, mde: float, alpha: float, power: float, control_share: float
) -> tuple[int, int]:
    """Persons in (control, treatment) for a two-sided two-proportion test to find a relative lift
    ``mde`` over ``baseline`` with probability ``power``, control being ``control_share`` of them.

    n_total = (z_a/2 * sqrt(p(1-p)(1/k + 1/(1-k))) + z_b * sqrt(pc(1-pc)/k + pt(1-pt)/(1-k)))^2 / d^2
    with p the rate both arms share under the null (their weighted mean) and d = pt - pc."""
    pc = baseline
    pt = baseline * (1 + mde)
    if not (0 < pc < 1 and 0 < pt < 1):
        return 0, 0
    k = control_share
    p = k * pc + (1 - k) * pt
    null_sd = math.sqrt(p * (1 - p) * (1 / k + 1 / (1 - k)))
    alt_sd = math.sqrt(pc * (1 - pc) / k + pt * (1 - pt) / (1 - k))
    total = ((_z(alpha) * null_sd + _z(2 * (1 - power)) * alt_sd) / (pt - pc)) ** 2
    return math.ceil(total * k), math.ceil(total * (1 - k))


def power_reached(baseline: float, mde: float, alpha: float, n_control: int, n_treatment: int) -> float:
    """Power of the two-proportion test at these arm sizes for a relative lift ``mde`` over ``baseline``."""
    pc = baseline
    pt = baseline * (1 + mde)
    if n_control <= 0 or n_treatment <= 0 or not (0 < pc < 1 and 0 < pt < 1):
        return 0.0 if n_control <= 0 or n_treatment <= 0 else NAN
    k_total = n_control + n_treatment
    p = (n_control * pc + n_treatment * pt) / k_total
    null_se = math.sqrt(p * (1 - p) * (1 / n_control + 1 / n_treatment))
    alt_se = math.sqrt(pc * (1 - pc) / n_control + pt * (1 - pt) / n_treatment)
    z = (abs(pt - pc) - _z(alpha) * null_se) / alt_se
    return float(scipy_stats.norm.cdf(z))


def needed_sample_means(
    baseline: float, sd: float, mde: float, alpha: float, power: float, control_share: float
) -> tuple[int, int]:
    """Persons in (control, treatment) for a two-sided test of means to find a relative lift ``mde``
    over ``baseline`` when a person's value has standard deviation ``sd`` in both arms."""
    delta = abs(baseline * mde)
    if not (math.isfinite(sd) and sd > 0 and delta > 0):
        return 0, 0
    k = control_share
    total = ((_z(alpha) + _z(2 * (1 - power))) * sd / delta) ** 2 * (1 / k + 1 / (1 - k))
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
    return float(scipy_stats.norm.cdf(delta / se - _z(alpha)))
