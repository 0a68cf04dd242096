"""Simulated experiments: A/A tests reject at alpha, and with a known effect the 95 % intervals cover it.

Each check simulates 2,000 experiments with a fixed seed and accepts the observed rate within 3.5 binomial
standard errors of the nominal one: a correct method fails about once in 2,000 seeds, a wrong variance
(a missing covariance, an n for an n - 1 that matters, a z for a t on small arms) fails by far more.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from streams.domain.experiments.model import Estimate, Moments, Proportion, RatioMoments, Role, Stats
from streams.domain.experiments.statistics import compare

RUNS = 2_000
ALPHA = 0.05
Floats = NDArray[np.float64]


def near(observed: float, expected: float, runs: int = RUNS) -> bool:
    return abs(observed - expected) <= 3.5 * math.sqrt(expected * (1 - expected) / runs)


def covers(interval: tuple[float, float] | None, truth: float) -> bool:
    assert interval is not None
    return interval[0] <= truth <= interval[1]


def check(estimates: list[Estimate], lift: float, relative: float) -> None:
    rejected = sum(e.significant for e in estimates) / len(estimates)
    if lift == 0:
        assert near(rejected, ALPHA), f"A/A rejects {rejected:.4f}, not about {ALPHA}"
    covered = sum(covers(e.absolute_ci, lift) for e in estimates) / len(estimates)
    assert near(covered, 1 - ALPHA), f"absolute interval covers {covered:.4f}, not about {1 - ALPHA}"
    covered = sum(covers(e.relative_ci, relative) for e in estimates) / len(estimates)
    assert near(covered, 1 - ALPHA), f"relative interval covers {covered:.4f}, not about {1 - ALPHA}"


def run(arms: Callable[[np.random.Generator], tuple[list[Stats], list[Stats]]], seed: int) -> list[Estimate]:
    control, treatment = arms(np.random.default_rng(seed))
    return [compare("kpi", Role.PRIMARY, c, t, ALPHA) for c, t in zip(control, treatment, strict=True)]


# --- proportions: conversion rate, unequal arms -------------------------------------------------------

N_CONTROL, N_TREATMENT = 3_000, 7_000


def conversions(rate_control: float, rate_treatment: float) -> Callable[..., tuple[list[Stats], list[Stats]]]:
    def arms(rng: np.random.Generator) -> tuple[list[Stats], list[Stats]]:
        control = rng.binomial(N_CONTROL, rate_control, RUNS)
        treatment = rng.binomial(N_TREATMENT, rate_treatment, RUNS)
        return (
            [Proportion(N_CONTROL, int(s)) for s in control],
            [Proportion(N_TREATMENT, int(s)) for s in treatment],
        )

    return arms


def test_proportion_a_a_rejects_at_alpha_and_covers_zero() -> None:
    check(run(conversions(0.08, 0.08), seed=1), lift=0.0, relative=0.0)


def test_proportion_interval_covers_a_known_lift() -> None:
    check(run(conversions(0.08, 0.09), seed=2), lift=0.01, relative=0.125)


# --- means: revenue per person, most persons at 0, the rest skewed ----------------------------------

BUYERS, LOG_MEAN, LOG_SD = 0.3, 3.0, 0.8
TRUE_MEAN = BUYERS * math.exp(LOG_MEAN + LOG_SD**2 / 2)


def revenue(rng: np.random.Generator, n: int, factor: float) -> Floats:
    values = factor * rng.lognormal(LOG_MEAN, LOG_SD, (RUNS, n)) * (rng.random((RUNS, n)) < BUYERS)
    return np.asarray(values)


def revenue_per_person(
    factor: float, n_control: int, n_treatment: int
) -> Callable[..., tuple[list[Stats], list[Stats]]]:
    def arms(rng: np.random.Generator) -> tuple[list[Stats], list[Stats]]:
        result: list[list[Stats]] = []
        for n, f in ((n_control, 1.0), (n_treatment, factor)):
            values = revenue(rng, n, f)
            sums, squares = values.sum(axis=1), (values * values).sum(axis=1)
            result.append([Moments(n, float(s), float(q)) for s, q in zip(sums, squares, strict=True)])
        return result[0], result[1]

    return arms


def test_mean_a_a_rejects_at_alpha_and_covers_zero() -> None:
    check(run(revenue_per_person(1.0, 1_000, 1_500), seed=3), lift=0.0, relative=0.0)


def test_mean_interval_covers_a_known_lift() -> None:
    check(run(revenue_per_person(1.1, 1_200, 1_200), seed=4), lift=0.1 * TRUE_MEAN, relative=0.1)


def test_mean_small_unequal_arms_need_the_t_quantile_and_welch_degrees_of_freedom() -> None:
    # 6 persons with a wide spread against 40 with a narrow one: a z quantile, or the pooled degrees of
    # freedom (44), would cover far less than 95 %.
    rng = np.random.default_rng(5)
    control = rng.normal(10.0, 4.0, (RUNS, 6))
    treatment = rng.normal(11.0, 0.5, (RUNS, 40))
    estimates = [
        compare(
            "kpi",
            Role.PRIMARY,
            Moments(6, float(c.sum()), float((c * c).sum())),
            Moments(40, float(t.sum()), float((t * t).sum())),
        )
        for c, t in zip(control, treatment, strict=True)
    ]
    covered = sum(covers(e.absolute_ci, 1.0) for e in estimates) / RUNS
    assert near(covered, 1 - ALPHA), covered


# --- ratio: AOV = revenue / orders over persons ------------------------------------------------------

ORDERS, BASKET_SCALE, BASKET_SD = 0.6, 25.0, 0.6
TRUE_AOV = 2.0 * BASKET_SCALE * math.exp(BASKET_SD**2 / 2)  # gamma(2 per order, person's basket)


def aov(factor: float, n: int) -> Callable[..., tuple[list[Stats], list[Stats]]]:
    def arms(rng: np.random.Generator) -> tuple[list[Stats], list[Stats]]:
        result: list[list[Stats]] = []
        for f in (1.0, factor):
            orders = rng.poisson(ORDERS, (RUNS, n)).astype(float)
            basket = f * BASKET_SCALE * rng.lognormal(0.0, BASKET_SD, (RUNS, n))
            x = rng.gamma(2.0 * orders, basket)  # a person's revenue: their orders, their basket size
            result.append(
                [
                    RatioMoments(n, float(a), float(b), float(c), float(d), float(e))
                    for a, b, c, d, e in zip(
                        x.sum(axis=1),
                        orders.sum(axis=1),
                        (x * x).sum(axis=1),
                        (orders * orders).sum(axis=1),
                        (x * orders).sum(axis=1),
                        strict=True,
                    )
                ]
            )
        return result[0], result[1]

    return arms


def test_ratio_a_a_rejects_at_alpha_and_covers_zero() -> None:
    check(run(aov(1.0, 1_500), seed=6), lift=0.0, relative=0.0)


def test_ratio_interval_covers_a_known_lift() -> None:
    check(run(aov(1.05, 1_500), seed=7), lift=0.05 * TRUE_AOV, relative=0.05)
