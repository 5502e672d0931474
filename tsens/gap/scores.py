"""Label-free scores of a data set from a network's logits and penultimate features.

Pure NumPy functions (float64 inside) of the N × K logits θ (rows θ_i), the softmax matrix P
(rows p_i = softmax(θ_i)) and the N × m penultimate features h_i, the input of the last
Linear layer (logits = h W_Lᵀ + b_L). Each is the published score, as its paper (and, where the
paper leaves a choice open, its authors' code) defines it:

* :func:`nuclear_norm` ‖P‖_* / sqrt(N·min(N, K)) (Deng et al. 2023);
* :func:`mano` (1/(NK) Σ_ik σ(θ_i)_k^p)^{1/p}, p = 4, σ softmax or its second-order Taylor
  normalization chosen by a data-set criterion (Xie et al. 2024);
* :func:`energy` mean_i −logsumexp(θ_i) and :func:`mde` log(logsumexp_i E_i − mean_i E_i) of the
  energies E_i (Peng et al. 2024);
* :func:`cot` 1 − ½ W_1 between the softmax outputs and the label marginal's one-hot vectors
  (L1 ground cost), an N × K transportation problem solved exactly, and :func:`cott` its
  thresholded variant (Lu et al. 2023);
* :func:`dispersion` log(Σ_k n_k ‖μ_k − μ‖² / (K − 1)) over the predicted classes (Xie et al.
  2023);
* :func:`gdscore` the L_p norm of the last layer's cross-entropy gradient with pseudo-labels
  (Xie et al. 2025);
* :func:`quartiles` q25, q50, q75 of a margin distribution (Jiang et al. 2019).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from scipy import sparse
from scipy.optimize import linprog
from scipy.special import logsumexp

MANO_NORM = 4
"""MaNo's entrywise norm order p (Xie et al. 2024, their default)."""
MANO_THRESHOLD = 5.0
"""MaNo's η: softmax when the criterion Φ exceeds it, the Taylor normalization otherwise."""
GDSCORE_NORM = 0.3
"""GdScore's p (Xie et al. 2025, the value their scripts run with)."""
GDSCORE_THRESHOLD = 0.5
"""GdScore's confidence threshold τ: below it a sample's pseudo-label is drawn at random."""
GDSCORE_BATCH = 128
"""GdScore's batch: the score is the mean over consecutive batches of this many samples."""
COT_MAX_SAMPLES = 1024
"""The most samples one COT/COTT transport takes (a fixed seeded subset; the authors' code caps
at 10,000): the exact transport's cost grows faster than N (README, Performance); the sampling
error of a share over 1,024 samples is at most 1.6 points."""


def _as_float(values: np.ndarray, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    return a


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an N × K logit matrix, in float64."""
    z = _as_float(logits, 2, "logits")
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def nuclear_norm(probs: np.ndarray) -> float:
    """The normalized nuclear norm ‖P‖_* / sqrt(N · min(N, K)) of the N × K softmax matrix, in
    [0, 1]; higher = more confident and more dispersed predictions, higher accuracy.

    Deng, Suh, Zheng, Zheng (2023), *Confidence and dispersity speak: characterizing prediction
    matrix for unsupervised accuracy estimation*, ICML.
    """
    p = _as_float(probs, 2, "probs")
    n, k = p.shape
    if n == 0 or k == 0:
        return math.nan
    return float(np.linalg.svd(p, compute_uv=False).sum() / math.sqrt(n * min(n, k)))


def mano_criterion(logits: np.ndarray) -> float:
    """MaNo's Φ: the mean cross-entropy between the uniform distribution and softmax(θ_i),
    mean_i [logsumexp(θ_i) − mean_k θ_ik] (= KL(uniform ‖ p_i) + log K)."""
    z = _as_float(logits, 2, "logits")
    return float(np.mean(logsumexp(z, axis=1) - z.mean(1)))


def mano_normalize(logits: np.ndarray, threshold: float = MANO_THRESHOLD) -> np.ndarray:
    """MaNo's normalization σ of every row: softmax when Φ > ``threshold`` (a confident
    model), else the second-order Taylor normalization v = 1 + θ + θ²/2, shifted by its row
    minimum and divided by its row sum (a row that is all equal gives 0s, as the authors' code)."""
    z = _as_float(logits, 2, "logits")
    if mano_criterion(z) > threshold:
        return softmax(z)
    v = 1.0 + z + z * z / 2.0
    v = v - v.min(1, keepdims=True)
    total = v.sum(1, keepdims=True)
    return np.divide(v, total, out=np.zeros_like(v), where=total > 0)


def mano(logits: np.ndarray, p: float = MANO_NORM, threshold: float = MANO_THRESHOLD) -> float:
    """MaNo: (1/(N·K) Σ_ik |σ(θ)_ik|^p)^{1/p}, the entrywise L_p norm of the normalized logit
    matrix scaled by (N·K)^{-1/p}, in [0, 1]; higher = higher accuracy. σ is softmax or the
    Taylor normalization as :func:`mano_normalize` picks (Φ > η = 5: softmax), p = 4, the whole
    set at once (the authors' package default; their experiments average over batches).

    Xie, Odonnat, Feofanov, Deng, Zhang, An (2024), *MaNo: exploiting matrix norm for
    unsupervised accuracy estimation under distribution shifts*, NeurIPS.
    """
    q = mano_normalize(logits, threshold)
    if q.size == 0:
        return math.nan
    return float(np.mean(np.abs(q) ** p) ** (1.0 / p))


def energies(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy E_i = −T logsumexp(θ_i / T) of every sample."""
    z = _as_float(logits, 2, "logits")
    return -temperature * logsumexp(z / temperature, axis=1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> float:
    """The mean free energy mean_i −T logsumexp(θ_i/T), T = 1: lower = more confident.

    Peng, Zou, Zhang, Liu, Yang (2024), *Energy-based automated model evaluation*, ICLR (the
    energy their MDE is built on).
    """
    e = energies(logits, temperature)
    return float(e.mean()) if len(e) else math.nan


def mde(logits: np.ndarray, temperature: float = 1.0) -> float:
    """The meta-distribution energy: log(−mean_i log softmax_i(E)) over the N energies, i.e.
    log(logsumexp_j E_j − mean_j E_j), as the authors' code computes their score ``EMD``
    (−inf for one sample).

    Peng, Zou, Zhang, Liu, Yang (2024), *Energy-based automated model evaluation*, ICLR.
    """
    e = energies(logits, temperature)
    if not len(e):
        return math.nan
    spread = float(logsumexp(e) - e.mean())
    return math.log(spread) if spread > 0 else -math.inf


def _marginal(label_marginal: np.ndarray, k: int) -> np.ndarray:
    m = np.asarray(label_marginal, dtype=np.float64).ravel()
    if m.shape != (k,) or not np.all(np.isfinite(m)) or np.any(m < 0) or m.sum() <= 0:
        raise ValueError(f"label_marginal: expected {k} non-negative shares with a positive sum")
    return m / m.sum()


def class_shares(labels: np.ndarray, classes: int) -> np.ndarray:
    """The share of each of ``classes`` classes among ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def _transport_lp(
    cost: np.ndarray, supply: np.ndarray, capacity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The transportation LP min Σ x_ik c_ik, x ≥ 0, row sums ``supply``, column sums
    ``capacity`` (both summing to the same total), by HiGHS' dual simplex: an optimal vertex x
    and the column duals w (w_K = 0; c_ik − u_i − w_k ≥ 0 at the optimum). Slow (12 s for
    10,000 × 10), an independent reference and last resort for :func:`_optimal_plan`."""
    n, k = cost.shape
    i_idx = np.repeat(np.arange(n), k)
    k_idx = np.tile(np.arange(k), n)
    var = np.arange(n * k)
    column_rows = k_idx < k - 1  # the last column's constraint is implied by the others
    rows = np.concatenate([i_idx, n + k_idx[column_rows]])
    cols = np.concatenate([var, var[column_rows]])
    a_eq = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + k - 1, n * k))
    res = linprog(
        cost.ravel(),
        A_eq=a_eq,
        b_eq=np.concatenate([supply, capacity[:-1]]),
        bounds=(0, None),
        method="highs-ds",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    if res.status != 0:
        raise RuntimeError(f"COT transport: HiGHS did not solve the problem ({res.message})")
    return np.clip(res.x.reshape(n, k), 0.0, None), np.append(res.eqlin.marginals[n:], 0.0)


_MASS_TOLERANCE = 1e-9
"""Class excesses within this many samples' mass count as met (the demands N·m_k are real)."""


class _Moves:
    """For each ordered pair of classes (a, b), the rows holding mass on a in the order of the
    cost of moving them to b, c_ib − c_ia: a presorted array of a's initial rows with a cursor,
    plus a heap of rows that arrived on a later; rows that left a are skipped when they surface."""

    def __init__(self, cost: np.ndarray, x: np.ndarray, best: np.ndarray) -> None:
        self.cost, self.x = cost, x
        k = cost.shape[1]
        self.sorted: list[list[np.ndarray]] = []
        for a in range(k):
            rows = np.flatnonzero(best == a)
            keys = cost[rows] - cost[rows, a][:, None]
            self.sorted.append([rows[np.argsort(keys[:, b], kind="stable")] for b in range(k)])
        self.cursor = np.zeros((k, k), dtype=np.int64)
        self.arrived: list[list[list[tuple[float, int]]]] = [[[] for _ in range(k)] for _ in range(k)]

    def arrive(self, row: int, a: int) -> None:
        """``row`` now holds mass on class ``a``."""
        for b in range(self.cost.shape[1]):
            if b != a:
                heapq.heappush(self.arrived[a][b], (float(self.cost[row, b] - self.cost[row, a]), row))

    def cheapest(self, a: int, b: int) -> tuple[float, int]:
        """The cheapest move of a row's mass from a to b: (its cost, the row), or (inf, −1)."""
        x, rows, cursor = self.x, self.sorted[a][b], int(self.cursor[a, b])
        while cursor < len(rows) and x[rows[cursor], a] <= 0:
            cursor += 1
        self.cursor[a, b] = cursor
        heap = self.arrived[a][b]
        while heap and x[heap[0][1], a] <= 0:
            heapq.heappop(heap)
        best = (math.inf, -1)
        if cursor < len(rows):
            row = int(rows[cursor])
            best = (float(self.cost[row, b] - self.cost[row, a]), row)
        if heap and heap[0][0] < best[0]:
            best = heap[0]
        return best


def _optimal_plan(cost: np.ndarray, target: np.ndarray) -> np.ndarray:
    """An optimal plan x (N × K, rows summing to 1, columns to ``target``) of the transportation
    problem min Σ x_ik c_ik, exactly (a combinatorial algorithm; no tolerance beyond
    :data:`_MASS_TOLERANCE` on the class masses).

    Samples with identical cost rows become one row with their count as supply. Every row starts
    on its cheapest class, which is optimal for the classes' loads it gives; then successive
    shortest paths (a min-cost flow) move mass from classes above their demand to classes below
    it: on the K classes, the arc a → b costs the cheapest move of one row's mass from a to b,
    c_ib − c_ia (negative when it undoes an earlier move), a Bellman–Ford search from the
    over-full classes finds the cheapest path to an under-full one, and the path carries as
    much as its excess, deficit and rows allow. Each step keeps the plan optimal for the loads
    it has (no negative cycle), so the plan is optimal when every demand is met.
    """
    rows, inverse, counts = np.unique(cost, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    supply = counts.astype(np.float64)
    n, k = rows.shape
    best = rows.argmin(1)
    x = np.zeros((n, k))
    x[np.arange(n), best] = supply
    excess = np.bincount(best, weights=supply, minlength=k) - target
    moves = _Moves(rows, x, best)
    arc = np.full((k, k), math.inf)
    via = np.full((k, k), -1, dtype=np.int64)

    for a in range(k):
        for b in range(k):
            if b != a:
                arc[a, b], via[a, b] = moves.cheapest(a, b)
    for _ in range(10 * n * k + 10 * k):
        if excess.max() <= _MASS_TOLERANCE:
            break
        dist = np.where(excess > _MASS_TOLERANCE, 0.0, math.inf)
        pred = np.full(k, -1, dtype=np.int64)
        for _ in range(k):
            through = dist[:, None] + arc
            src = through.argmin(0)
            shorter = through[src, np.arange(k)] < dist
            if not shorter.any():
                break
            dist[shorter] = through[src, np.arange(k)][shorter]
            pred[shorter] = src[shorter]
        deficit = np.flatnonzero(excess < -_MASS_TOLERANCE)
        end = int(deficit[np.argmin(dist[deficit])])
        if not math.isfinite(dist[end]):
            raise RuntimeError("COT transport: no path from an over-full to an under-full class")
        path = [end]
        while pred[path[-1]] >= 0 and len(path) <= k:
            path.append(int(pred[path[-1]]))
        path.reverse()
        arcs = [(a, b, int(via[a, b])) for a, b in zip(path, path[1:], strict=False)]
        amount = min(excess[path[0]], -excess[end], *(x[r, a] for a, _, r in arcs))
        for a, b, r in arcs:
            x[r, a] -= amount
            if x[r, a] <= 1e-12 * supply[r]:
                x[r, a] = 0.0
            arrived = x[r, b] <= 0
            x[r, b] += amount
            if arrived:  # r's moves out of b join b's arcs
                moves.arrive(r, b)
                keys = rows[r] - rows[r, b]
                better = keys < arc[b]
                better[b] = False
                arc[b, better], via[b, better] = keys[better], r
        excess[path[0]] -= amount
        excess[end] += amount
        for a, _, r in arcs:
            if x[r, a] <= 0:  # r left a: the arcs out of a that moved r need their next row
                for b in np.flatnonzero(via[a] == r):
                    arc[a, b], via[a, b] = moves.cheapest(a, int(b))
    else:  # never seen; the LP is exact too, only slower
        x = _transport_lp(rows, supply, target)[0]
    return (x / supply[:, None])[inverse]


def cot_transport(probs: np.ndarray, label_marginal: np.ndarray) -> tuple[float, np.ndarray]:
    """COT's estimated error and each sample's transported cost.

    The optimal transport, with ground cost ½‖p − e_k‖_1 = (1 + Σ_j p_j)/2 − p_k (= 1 − p_k
    on the simplex), from the N softmax vectors (mass 1/N each) to the K one-hot vectors with
    masses ``label_marginal``, solved exactly as the N × K transportation problem
    (:func:`_optimal_plan`; classes of zero mass dropped): x_ik ≥ 0 the
    share of sample i sent to class k, Σ_k x_ik = 1, Σ_i x_ik = N m_k, minimizing
    (1/N) Σ x_ik c_ik. Returns that cost (the error) and c_i = Σ_k x_ik c_ik, the cost each
    sample carries in the plan found (their mean is the error; a sample split between classes
    carries the blend).
    """
    p = _as_float(probs, 2, "probs")
    n, k = p.shape
    m = _marginal(label_marginal, k)
    if n == 0:
        return math.nan, np.zeros(0)
    cost = (1.0 + p.sum(1, keepdims=True)) / 2.0 - p
    keep = np.flatnonzero(m > 0)
    cost, m = cost[:, keep], m[keep]
    if len(keep) == 1:
        per_sample = cost[:, 0].copy()
    else:
        x = _optimal_plan(cost, n * m)
        per_sample = (x * cost).sum(1)
    return float(per_sample.mean()), per_sample


def _subset(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """All of 0..n−1, or a seeded sorted subset of ``max_samples`` of them."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def cot(
    probs: np.ndarray, label_marginal: np.ndarray, *, max_samples: int | None = COT_MAX_SAMPLES, seed: int = 0
) -> float:
    """COT's estimated accuracy, 1 − ½ W_1(softmax outputs, label marginal) (:func:`cot_transport`,
    on a seeded subset of ``max_samples`` samples when there are more).

    Lu, Qin, Zhai, Shen, Chen, Wang, Kolouri, Stepputtis, Campbell, Sycara (2023),
    *Characterizing out-of-distribution error via optimal transport*, NeurIPS.
    """
    p = _as_float(probs, 2, "probs")
    error, _ = cot_transport(p[_subset(len(p), max_samples, seed)], label_marginal)
    return 1.0 - error


def cott_threshold(
    train_probs: np.ndarray,
    label_marginal: np.ndarray,
    train_error: float,
    *,
    max_samples: int | None = COT_MAX_SAMPLES,
    seed: int = 0,
) -> float:
    """COTT's threshold t, fitted on a labelled set (here the training set): its samples'
    transported costs c_i (:func:`cot_transport` to its own label marginal, which is the
    transport to its one-hot labels) and t the (N − e)-th smallest of them, e = round(error·N),
    so that exactly e samples have c_i > t when the costs have no ties (−inf when e = N).

    Lu et al. (2023), *Characterizing out-of-distribution error via optimal transport*, NeurIPS
    (COTT, the authors' ``COTT-MC``: the share of costs beyond a threshold fitted so that it
    equals the validation error).
    """
    p = _as_float(train_probs, 2, "train_probs")
    _, costs = cot_transport(p[_subset(len(p), max_samples, seed)], label_marginal)
    n = len(costs)
    errors = int(round(float(train_error) * n))
    if not 0 <= errors <= n:
        raise ValueError(f"train_error must lie in [0, 1], got {train_error!r}")
    return -math.inf if errors == n else float(np.sort(costs)[n - errors - 1])


def cott(
    probs: np.ndarray,
    label_marginal: np.ndarray,
    threshold: float,
    *,
    max_samples: int | None = COT_MAX_SAMPLES,
    seed: int = 0,
) -> float:
    """COTT's estimated accuracy: 1 − the share of samples whose transported cost exceeds the
    threshold of :func:`cott_threshold`.

    Lu et al. (2023), *Characterizing out-of-distribution error via optimal transport*, NeurIPS.
    """
    p = _as_float(probs, 2, "probs")
    _, costs = cot_transport(p[_subset(len(p), max_samples, seed)], label_marginal)
    return 1.0 - float(np.mean(costs > threshold))


def cot_and_cott(
    probs: np.ndarray,
    label_marginal: np.ndarray,
    train_probs: np.ndarray,
    train_error: float,
    *,
    max_samples: int | None = COT_MAX_SAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """COT's and COTT's estimated accuracies of one set (:func:`cot`, :func:`cott` with the
    threshold :func:`cott_threshold` fits on the training set), sharing one transport."""
    p = _as_float(probs, 2, "probs")
    threshold = cott_threshold(train_probs, label_marginal, train_error, max_samples=max_samples, seed=seed)
    error, costs = cot_transport(p[_subset(len(p), max_samples, seed)], label_marginal)
    return 1.0 - error, 1.0 - float(np.mean(costs > threshold))


def dispersion(features: np.ndarray, predicted: np.ndarray, classes: int | None = None) -> float:
    """The dispersion score log(Σ_k n_k ‖μ_k − μ‖² / (K − 1)) of the features grouped by predicted
    class: μ the mean of all features, μ_k and n_k the mean and count of class k, K the number
    of classes that have a member (empty classes are skipped, as the authors' code does); NaN
    with fewer than two such classes, −inf when every class mean is μ. Higher = better separated
    classes, higher accuracy. ``classes``, when given, is the number of classes the labels must
    lie below.

    Xie, Wei, Feng, Cao, An (2023), *On the importance of feature separability in predicting
    out-of-distribution error*, NeurIPS.
    """
    x = _as_float(features, 2, "features")
    y = np.asarray(predicted, dtype=np.int64).ravel()
    if len(y) != len(x):
        raise ValueError(f"predicted: {len(y)} labels for {len(x)} samples")
    if len(y) and (y.min() < 0 or (classes is not None and y.max() >= classes)):
        raise ValueError("predicted: labels out of range")
    present, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(present) < 2:
        return math.nan
    sums = sparse.csr_matrix((np.ones(len(y)), (index, np.arange(len(y)))), shape=(len(present), len(y))) @ x
    means = sums / counts[:, None]
    between = float(np.sum(counts * np.sum((means - x.mean(0)) ** 2, axis=1)))
    return math.log(between / (len(present) - 1)) if between > 0 else -math.inf


def pseudo_labels(probs: np.ndarray, threshold: float = GDSCORE_THRESHOLD, seed: int = 0) -> np.ndarray:
    """GdScore's pseudo-labels: the predicted class where max_k p_ik ≥ ``threshold``, else a class
    drawn uniformly at random (NumPy's generator seeded with ``seed``, drawn in sample order)."""
    p = _as_float(probs, 2, "probs")
    labels = p.argmax(1)
    low = p.max(1) < threshold
    labels[low] = np.random.default_rng(seed).integers(0, p.shape[1], size=int(low.sum()))
    return labels


def gdscore(
    logits: np.ndarray,
    features: np.ndarray,
    *,
    p: float = GDSCORE_NORM,
    threshold: float = GDSCORE_THRESHOLD,
    batch_size: int | None = GDSCORE_BATCH,
    bias: bool = False,
    seed: int = 0,
) -> float:
    """GdScore: the L_p norm (Σ |g|^p)^{1/p}, p = 0.3, of the gradient of the mean cross-entropy
    with respect to the last Linear layer's weight, ∂CE/∂W_L = (1/B) Σ_i (p_i − e_{ŷ_i}) h_iᵀ
    (closed form: the logits are affine in W_L), with :func:`pseudo_labels` ŷ (τ = 0.5), averaged
    over consecutive batches of ``batch_size`` samples (128, the authors' setting; None: one
    batch of all). Higher = the model would move more, lower accuracy. ``bias`` appends the
    bias column (the authors' code takes the weight only).

    Xie, Odonnat, Feofanov, Redko, Zhang, An (2025), *Leveraging gradients for unsupervised
    accuracy estimation under distribution shift*, TMLR.
    """
    z = _as_float(logits, 2, "logits")
    h = _as_float(features, 2, "features")
    if len(h) != len(z):
        raise ValueError(f"features: {len(h)} rows for {len(z)} logit rows")
    if not len(z):
        return math.nan
    if p <= 0:
        raise ValueError(f"p must be positive, got {p!r}")
    probs = softmax(z)
    residual = probs.copy()
    residual[np.arange(len(z)), pseudo_labels(probs, threshold, seed)] -= 1.0
    if bias:
        h = np.hstack([h, np.ones((len(h), 1))])
    size = len(z) if batch_size is None else int(batch_size)
    scores = []
    for start in range(0, len(z), size):
        grad = (
            residual[start : start + size].T @ h[start : start + size] / len(residual[start : start + size])
        )
        scores.append(float(np.sum(np.abs(grad) ** p) ** (1.0 / p)))
    return float(np.mean(scores))


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """q25, q50, q75 (linear interpolation) of the finite ``values``; NaN when none is finite.
    The margin-distribution signature of Jiang, Krishnan, Mobahi, Bengio (2019), *Predicting the
    generalization gap in deep networks with margin distributions*, ICLR."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    q = np.quantile(v, [0.25, 0.5, 0.75])
    return float(q[0]), float(q[1]), float(q[2])


def logit_margin(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Per sample the logit margin of Jiang et al. (2019): f_y − max_{j≠y} f_j for the given
    ``labels``, else of the predicted class (top − runner-up, never negative); +inf with one
    output."""
    z = _as_float(logits, 2, "logits")
    if z.shape[1] < 2:
        return np.full(len(z), np.inf)
    rows = np.arange(len(z))
    chosen = z.argmax(1) if labels is None else np.asarray(labels, dtype=np.int64)
    others = z.copy()
    others[rows, chosen] = -np.inf
    return z[rows, chosen] - others.max(1)
