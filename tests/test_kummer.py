"""Gaussian absolute moments via Kummer's ₁F₁ (SPEC §2.4) against independent oracles:
mpmath at 50 digits, Monte Carlo, and closed forms derived by hand."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsens.kummer import (
    P_MAX,
    log10_gaussian_abs_moment,
    log_gaussian_abs_moment,
    log_hyp1f1,
)

mpmath.mp.dps = 50

RATIOS = (0.0, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
# |mu|/sigma on both sides of sqrt(80), where log_gaussian_abs_moment switches branch
SWITCH_RATIOS = (math.sqrt(80) * (1 - 1e-12), math.sqrt(80) * (1 + 1e-12))
SIGMAS = (0.5, 1.0, 7.3)
ORDERS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0, 16.0, 31.0, 32.0, 63.0, 64.0)
# |z| on both sides of the x = 40 switch between the scipy and the asymptotic branch
SWITCH_ZS = (-40.0 * (1 - 1e-12), -40.0, -40.0 * (1 + 1e-12), -26.0, -35.0, -45.0)
LN_TOL = 1e-9  # absolute on ln, i.e. relative 1e-9 on the moment


def mp_log_hyp1f1(a: float, z: float) -> float:
    return float(mpmath.log(mpmath.hyp1f1(mpmath.mpf(a), mpmath.mpf(0.5), mpmath.mpf(z))))


def mp_log_moment(p: float, mu: float, sigma: float) -> float:
    p_, mu_, s_ = mpmath.mpf(p), mpmath.mpf(mu), mpmath.mpf(sigma)
    moment = (
        s_**p_
        * mpmath.power(2, p_ / 2)
        * mpmath.gamma((p_ + 1) / 2)
        / mpmath.sqrt(mpmath.pi)
        * mpmath.hyp1f1(-p_ / 2, mpmath.mpf(0.5), -(mu_**2) / (2 * s_**2))
    )
    return float(mpmath.log(moment))


@pytest.mark.parametrize("p", ORDERS + (100.0, 128.7, P_MAX))
def test_log_moment_matches_mpmath_on_grid(p: float) -> None:
    for sigma in SIGMAS:
        for ratio in RATIOS + SWITCH_RATIOS:
            for mu in (ratio * sigma, -ratio * sigma):
                got = log_gaussian_abs_moment(p, mu, sigma)
                assert abs(got - mp_log_moment(p, mu, sigma)) <= LN_TOL, (p, mu, sigma)


@pytest.mark.parametrize("p", ORDERS + (0.1, 2.9, 63.9, 100.0, 128.7, P_MAX))
def test_log_hyp1f1_matches_mpmath(p: float) -> None:
    zs = tuple(-0.5 * r * r for r in RATIOS) + SWITCH_ZS + (-1e-300, -5e5)
    for z in zs:
        got = log_hyp1f1(-p / 2, 0.5, z)
        assert math.isfinite(got)
        assert abs(got - mp_log_hyp1f1(-p / 2, z)) <= LN_TOL, (p, z)


@pytest.mark.parametrize(
    ("mu", "sigma", "p"), [(0.0, 1.0, 1.0), (1.5, 2.0, 2.0), (-3.0, 1.0, 3.0), (0.7, 0.4, 1.0)]
)
def test_log_moment_matches_monte_carlo(mu: float, sigma: float, p: float) -> None:
    rng = np.random.default_rng(20120918)
    samples = np.abs(rng.normal(mu, sigma, size=2_000_000)) ** p
    mean = samples.mean()
    std_err = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(math.exp(log_gaussian_abs_moment(p, mu, sigma)) - mean) <= 3.0 * std_err


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("ratio", RATIOS + (1e6,))
def test_even_moments_closed_form(ratio: float, sigma: float) -> None:
    mu = ratio * sigma
    second = mu**2 + sigma**2
    fourth = mu**4 + 6 * mu**2 * sigma**2 + 3 * sigma**4
    assert log_gaussian_abs_moment(2.0, mu, sigma) == pytest.approx(math.log(second), rel=0, abs=1e-13)
    assert log_gaussian_abs_moment(4.0, -mu, sigma) == pytest.approx(math.log(fourth), rel=0, abs=1e-13)


@pytest.mark.parametrize("ratio", RATIOS)
def test_first_moment_is_folded_normal_mean(ratio: float) -> None:
    sigma = 1.7
    mu = ratio * sigma
    folded = sigma * math.sqrt(2 / math.pi) * math.exp(-0.5 * ratio**2) + mu * math.erf(ratio / math.sqrt(2))
    assert log_gaussian_abs_moment(1.0, mu, sigma) == pytest.approx(math.log(folded), rel=0, abs=1e-13)
    if mu == 0.0:
        half_normal_mean = sigma * math.sqrt(2 / math.pi)
        assert math.exp(log_gaussian_abs_moment(1.0, 0.0, sigma)) == pytest.approx(half_normal_mean)


@pytest.mark.parametrize("p", (1.0, 2.0, 2.5, 7.0, 16.0, 63.0))
@pytest.mark.parametrize("ratio", (100.0, 1000.0, 1e5))
def test_large_ratio_second_order_expansion(p: float, ratio: float) -> None:
    # |mu + sigma Z|^p = |mu|^p (1 + tZ)^p, t = sigma/mu; E (1+tZ)^p = 1 + C(p,2) t² + 3 C(p,4) t⁴ + ...
    sigma = 0.3
    mu = ratio * sigma
    t2 = 1.0 / ratio**2
    binom4 = abs(p * (p - 1) * (p - 2) * (p - 3)) / 24
    expected = p * math.log(mu) + math.log1p(p * (p - 1) / 2 * t2)
    assert abs(log_gaussian_abs_moment(p, mu, sigma) - expected) <= 4 * binom4 * t2**2 + 1e-14 * abs(expected)


def test_special_cases() -> None:
    assert log_gaussian_abs_moment(0.0, 3.0, 2.0) == 0.0
    assert log_gaussian_abs_moment(0.0, 0.0, 0.0) == 0.0
    assert log_gaussian_abs_moment(2.5, -3.0, 0.0) == 2.5 * math.log(3.0)
    assert log_gaussian_abs_moment(2.5, 0.0, 0.0) == -math.inf
    # tiny sigma: mu²/(2 sigma²) overflows, the result is still the point-mass limit
    assert log_gaussian_abs_moment(3.0, 2.0, 1e-200) == pytest.approx(3.0 * math.log(2.0), abs=1e-15)
    assert log_gaussian_abs_moment(5.0, 1e-300, 1e-300) == pytest.approx(mp_log_moment(5.0, 1e-300, 1e-300))
    assert log_hyp1f1(0.0, 0.5, -3.0) == pytest.approx(0.0, abs=1e-15)
    assert log_hyp1f1(-3.0, 0.5, 0.0) == 0.0
    assert log10_gaussian_abs_moment(3.0, 1.2, 0.8) == pytest.approx(
        log_gaussian_abs_moment(3.0, 1.2, 0.8) / math.log(10), rel=1e-15
    )


@settings(max_examples=50, deadline=None)
@given(
    p=st.floats(0.0, 64.0),
    ratio=st.floats(0.0, 1000.0),
    sigma=st.floats(1e-3, 1e3),
    negative=st.booleans(),
)
def test_random_parameters_match_mpmath(p: float, ratio: float, sigma: float, negative: bool) -> None:
    mu = -ratio * sigma if negative else ratio * sigma
    got = log_gaussian_abs_moment(p, mu, sigma)
    assert math.isfinite(got)
    assert abs(got - mp_log_moment(p, mu, sigma)) <= LN_TOL
    z = -0.5 * ratio**2
    assert abs(log_hyp1f1(-p / 2, 0.5, z) - mp_log_hyp1f1(-p / 2, z)) <= LN_TOL


@pytest.mark.parametrize(
    ("p", "mu", "sigma"),
    [
        (1.0, 0.0, -1.0),
        (-0.5, 0.0, 1.0),
        (P_MAX + 1, 0.0, 1.0),
        (math.nan, 0.0, 1.0),
        (2.0, math.nan, 1.0),
        (2.0, 0.0, math.inf),
    ],
)
def test_moment_rejects_bad_arguments(p: float, mu: float, sigma: float) -> None:
    with pytest.raises(ValueError):
        log_gaussian_abs_moment(p, mu, sigma)
    with pytest.raises(ValueError):
        log10_gaussian_abs_moment(p, mu, sigma)


@pytest.mark.parametrize(
    ("a", "b", "z"), [(-1.0, 1.5, -1.0), (0.5, 0.5, -1.0), (-1.0, 0.5, 1.0), (-1.0, 0.5, math.nan)]
)
def test_log_hyp1f1_rejects_unsupported_arguments(a: float, b: float, z: float) -> None:
    with pytest.raises(ValueError):
        log_hyp1f1(a, b, z)
