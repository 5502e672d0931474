"""Absolute moments of a Gaussian via Kummer's function, in log space.

``E|N|^p = σ^p 2^{p/2} Γ((p+1)/2)/sqrt(π) · ₁F₁(−p/2; 1/2; −μ²/(2σ²))`` for N ~ Normal(μ, σ²)
(Winkelbauer 2012, "Moments and absolute moments of the normal distribution", arXiv:1209.4340).

With ``x = μ²/(2σ²)`` the only ₁F₁ needed is ``₁F₁(−p/2; 1/2; −x)``, x >= 0, which is positive.
Two regions, split at ``x = 40``:

- ``x <= 40``: Kummer's transformation (DLMF 13.2.39)
  ``₁F₁(a; b; −x) = e^{−x} ₁F₁(b−a; b; x)``; the right-hand series has only positive terms and
  scipy's ``hyp1f1`` (Boost) evaluates it to ~1e-14 relative, without overflow, for these x.
- ``x > 40``: the large-argument expansion (DLMF 13.7.2). Its ``e^{−x}`` part is below double
  precision here, leaving ``₁F₁(a; 1/2; −x) ≈ Γ(1/2)/Γ(1/2−a) x^{−a} Σ_s (a)_s (a+1/2)_s / s! x^{−s}``,
  summed until a term drops below 1e-17 of the sum. For even integer p the series stops by
  itself (``(a)_s = 0``, the Hermite polynomial, exact); for odd p it stops too
  (``(a+1/2)_s = 0``). Below x ≈ 30 its smallest term exceeds double precision for small p,
  hence the margin.

The split was checked against ``mpmath.hyp1f1`` at 50 digits for 0 <= p <= 400, the term
bound in the series for p <= P_MAX (tests/test_kummer.py keeps to p <= P_MAX).
"""

from __future__ import annotations

import math

from scipy.special import hyp1f1

P_MAX = 256.0
"""Largest moment order accepted (the accuracy checks cover 0 <= p <= P_MAX)."""

_X_SWITCH = 40.0
_SERIES_TOL = 1e-17
_HALF_LOG_PI = 0.5 * math.log(math.pi)


def _check_order(p: float) -> None:
    if not 0.0 <= p <= P_MAX:
        raise ValueError(f"moment order p must be in [0, {P_MAX:g}], got {p!r}")


def _log_asymptotic_sum(p: float, inv_x: float) -> float:
    """``ln Σ_s (−p/2)_s (1/2−p/2)_s / s! · inv_x^s`` for ``1/inv_x > 40`` (DLMF 13.7.2)."""
    a = -0.5 * p
    c = 0.5 - 0.5 * p
    term = 1.0
    total = 1.0
    # converges within p/2 + 20 terms for x > 40, p <= P_MAX; the bound guards the loop only
    for s in range(int(0.5 * p) + 40):
        term *= (s + a) * (s + c) / (s + 1) * inv_x
        total += term
        if abs(term) <= _SERIES_TOL * total:
            break
    return math.log(total)


def _log_kummer_small(p: float, x: float) -> float:
    """``ln ₁F₁(−p/2; 1/2; −x) = −x + ln ₁F₁((p+1)/2; 1/2; x)`` for 0 <= x <= 40 (DLMF 13.2.39)."""
    return -x + math.log(hyp1f1(0.5 * (p + 1.0), 0.5, x))


def log_hyp1f1(a: float, b: float, z: float) -> float:
    """Natural log of Kummer's ₁F₁(a; b; z) for ``b = 1/2``, ``a = −p/2 <= 0``, ``z <= 0``.

    This is the case of Gaussian absolute moments, where ₁F₁ > 0; other
    arguments raise ValueError. Accurate to about 1e-15 relative in the log for ``|z|`` up to
    at least 5e5 and ``p = −2a`` up to ``P_MAX``.
    """
    if b != 0.5:
        raise ValueError(f"log_hyp1f1 supports b = 1/2 only, got b={b!r}")
    if not (math.isfinite(a) and math.isfinite(z) and z <= 0.0):
        raise ValueError(f"log_hyp1f1 needs finite a <= 0 and z <= 0, got a={a!r}, z={z!r}")
    p = -2.0 * a
    _check_order(p)
    x = -z
    if x > _X_SWITCH:
        log_ratio = _HALF_LOG_PI - math.lgamma(0.5 * (p + 1.0))
        return log_ratio + 0.5 * p * math.log(x) + _log_asymptotic_sum(p, 1.0 / x)
    return _log_kummer_small(p, x)


def log_gaussian_abs_moment(p: float, mu: float, sigma: float) -> float:
    """``ln E|N|^p`` for ``N ~ Normal(mu, sigma²)`` (Winkelbauer 2012;).

    ``sigma = 0`` is the point mass at mu (``p·ln|mu|``, ``-inf`` when mu = 0 < p); ``p = 0``
    gives 0. Negative or non-finite sigma, and p outside ``[0, P_MAX]``, raise ValueError.
    For ``|mu|/sigma > sqrt(80)`` (x > 40) it returns
    ``p·ln|mu| + ln Σ_s (−p/2)_s (1/2−p/2)_s / s! · (2sigma²/mu²)^s`` directly, so a tiny sigma
    neither overflows ``mu²/sigma²`` nor cancels ``p·ln sigma``.
    """
    _check_order(p)
    if not (math.isfinite(mu) and math.isfinite(sigma) and sigma >= 0.0):
        raise ValueError(f"need finite mu and sigma >= 0, got mu={mu!r}, sigma={sigma!r}")
    if p == 0.0:
        return 0.0
    if mu == 0.0 and sigma == 0.0:
        return -math.inf
    if abs(mu) > math.sqrt(2.0 * _X_SWITCH) * sigma:
        return p * math.log(abs(mu)) + _log_asymptotic_sum(p, 2.0 * (sigma / mu) ** 2)
    prefactor = p * math.log(sigma) + 0.5 * p * math.log(2.0) + math.lgamma(0.5 * (p + 1.0)) - _HALF_LOG_PI
    return prefactor + _log_kummer_small(p, 0.5 * (mu / sigma) ** 2)


def log10_gaussian_abs_moment(p: float, mu: float, sigma: float) -> float:
    """``log10 E|N|^p`` for ``N ~ Normal(mu, sigma²)``; see :func:`log_gaussian_abs_moment`."""
    return log_gaussian_abs_moment(p, mu, sigma) / math.log(10.0)
