"""Closed (or open) one-dimensional curves in a network's input space, where transitions are counted.

A :class:`Trajectories` holds T curves of one family, in the network's input space (after
preprocessing), as float64 NumPy arrays:

* **ellipses** ``x(t) = center + u cos t + v sin t``, t ∈ [0, 2π) (``center``, ``u``, ``v``: T × d);
* **polylines** through ``points`` (T × k × d): segment i runs from point i to point i + 1 and
  takes the parameter t ∈ [i, i + 1); a closed one also runs from the last point back to the
  first, so its parameter covers [0, k), an open one [0, k − 1].

Makers: :func:`ellipses_through_data` ([N] App. A.5.2: the ellipse centred at the centroid of
three data points that passes through all three), :func:`random_ellipses` (zero-centred, axes
from N(0, I)), :func:`translation_polygons` ([N] §3, Fig. App.9: the closed polygon through the
W horizontal translations of one image, with wrap-around; the *raw* image is shifted and then
preprocessed like the data set's own samples), and :func:`load_trajectories` (an ``.npz`` file,
the format :meth:`Trajectories.save` writes).

**Degenerate curves.** A curve that is a single point — an ellipse with u = v = 0 (through three
samples whose inputs are identical), a polyline whose points are all equal (the translations of
an image that every horizontal shift leaves unchanged) — is refused when the curves are made,
with an error naming the curve and the data indices it came from: it has no length, so its
transitions per unit length are 0/0 with no limit to define them by (ever smaller curves around
a point on a region boundary cross it twice at ever smaller length), and counting it would only
add zeros. Every other curve has positive length (:meth:`Trajectories.lengths`) and is counted as
it is: a flat ellipse (u ∥ v, e.g. through three collinear samples or two identical ones) is a
segment traversed there and back, a valid closed curve; zero-length segments of a polyline
(a point repeated consecutively) are no part of its path — its counts, exact and sampled, and the
Jacobian along it are those of the polyline with the repeats removed.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..choices import TRAJECTORY_KINDS
from ..datasets import Dataset
from ..datasets.formats import expect_npz
from ..errors import TsensError
from ..files import atomic_output

ELLIPSE_KEYS = ("center", "u", "v")

_POINT_CAUSES = {
    "ellipse": "its three samples have the same input after preprocessing; another `seed` draws others",
    "translations": "every horizontal shift leaves its image's input unchanged; another `seed` draws others",
}
"""Why a maker's curve (``source``) can be a single point, for the message refusing it."""


@dataclass(frozen=True, eq=False)
class Trajectories:
    """T curves of one family in input space (module docstring), with the data set positions
    they were built from (``indices``: the original indices of the data points, T × m, or None).
    A curve that is a single point is refused (module docstring, *Degenerate curves*)."""

    kind: str
    center: np.ndarray | None = field(default=None, repr=False)
    u: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)
    points: np.ndarray | None = field(default=None, repr=False)
    closed: bool = True
    indices: np.ndarray | None = field(default=None, repr=False)
    source: str = "trajectories"

    def __post_init__(self) -> None:
        where = self.source
        if self.points is None:
            arrays = {k: getattr(self, k) for k in ELLIPSE_KEYS}
            missing = [k for k, a in arrays.items() if a is None]
            if missing:
                raise TsensError(
                    f"{where}: an ellipse needs `center`, `u` and `v`; missing {', '.join(missing)}"
                )
            for key, a in arrays.items():
                object.__setattr__(self, key, _floats(a, key, where, ndim=2))
            shape = self.center.shape
            for key in ("u", "v"):
                if getattr(self, key).shape != shape:
                    raise TsensError(
                        f"{where}: key '{key}' has shape {getattr(self, key).shape} but 'center' has {shape} "
                        "(T × d each)"
                    )
        else:
            if any(getattr(self, k) is not None for k in ELLIPSE_KEYS):
                raise TsensError(
                    f"{where}: give either 'points' (polylines) or 'center', 'u', 'v' (ellipses)"
                )
            points = _floats(self.points, "points", where, ndim=3)
            if points.shape[1] < 2:
                raise TsensError(
                    f"{where}: key 'points' needs at least 2 points per curve (T × k × d), got {points.shape}"
                )
            object.__setattr__(self, "points", points)
        if self.count == 0 or self.dim == 0:
            raise TsensError(f"{where}: no curves (T = {self.count}, d = {self.dim})")
        if self.indices is not None:
            idx = np.asarray(self.indices)
            if idx.dtype.kind not in "iu" or idx.ndim != 2 or len(idx) != self.count:
                raise TsensError(
                    f"{where}: key 'indices' must be integers, one row per curve (T × m), got "
                    f"{idx.dtype} of shape {idx.shape}"
                )
            object.__setattr__(self, "indices", idx.astype(np.int64))
        self._refuse_points()

    def _refuse_points(self) -> None:
        """Refuse curves that are a single point, naming the first and its data indices."""
        if self.is_ellipse:
            point = ~((self.u != 0).any(1) | (self.v != 0).any(1))
            why = "keys 'u' and 'v' are 0"
        else:
            point = (self.points == self.points[:, :1]).all((1, 2))
            why = "key 'points': all its points are equal"
        bad = np.flatnonzero(point)
        if len(bad) == 0:
            return
        i = int(bad[0])
        data = "" if self.indices is None else f" (data indices {', '.join(map(str, self.indices[i]))})"
        more = f"; {len(bad)} of the {self.count} curves are points" if len(bad) > 1 else ""
        raise TsensError(
            f"{self.source}: curve {i}{data} is a single point ({_POINT_CAUSES.get(self.source, why)}), "
            f"not a curve: it has no length, so no transitions per unit length{more}"
        )

    # ------------------------------------------------------------------ shape

    @property
    def is_ellipse(self) -> bool:
        return self.points is None

    @property
    def count(self) -> int:
        """T, the number of curves."""
        return len(self.center if self.is_ellipse else self.points)

    @property
    def dim(self) -> int:
        """d, the input dimension."""
        return (self.center if self.is_ellipse else self.points).shape[-1]

    @property
    def segments(self) -> int:
        """Segments per polyline (k if closed, k − 1 if open); 1 for an ellipse."""
        if self.is_ellipse:
            return 1
        k = self.points.shape[1]
        return k if self.closed else k - 1

    def chunks(self, size: int) -> list[Trajectories]:
        """The curves in consecutive groups of at most ``size`` (the last may be smaller), in
        order: concatenating what each gives equals what all give at once."""
        if size < 1:
            raise TsensError(f"`size` must be at least 1, got {size}")
        arrays = ("center", "u", "v", "points", "indices")
        return [
            replace(
                self,
                **{k: getattr(self, k)[start : start + size] for k in arrays if getattr(self, k) is not None},
            )
            for start in range(0, self.count, size)
        ]

    @property
    def period(self) -> float:
        """Length of the parameter range: 2π for an ellipse, the number of segments for a polyline."""
        return 2 * math.pi if self.is_ellipse else float(self.segments)

    @property
    def family(self) -> str:
        """``ellipse``, ``polygon`` (closed polyline) or ``polyline`` (open)."""
        return "ellipse" if self.is_ellipse else ("polygon" if self.closed else "polyline")

    # ------------------------------------------------------------------ geometry

    def pieces(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The smooth pieces as coefficients of a basis in their local parameter, P × K × d
        (float64): ellipses ``[center, u, v]`` on (1, cos t, sin t), t ∈ [0, 2π), one piece per
        curve; polylines ``[p_i, p_{i+1} − p_i]`` on (1, s), s ∈ [0, 1), ``segments`` pieces per
        curve in order."""
        if self.is_ellipse:
            coef = np.stack([self.center, self.u, self.v], axis=1)
        else:
            p = self.points
            nxt = np.roll(p, -1, axis=1)[:, : self.segments]
            start = p[:, : self.segments]
            coef = np.stack([start, nxt - start], axis=2).reshape(-1, 2, self.dim)
        return torch.from_numpy(np.ascontiguousarray(coef)).to(device=device, dtype=torch.float64)

    def at(
        self, t: np.ndarray | torch.Tensor, which: np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Points x(t) (float64, len(t) × d) of curve ``which[i]`` (default: curve 0) at parameter
        ``t[i]`` (ellipse: radians; polyline: segment index + position in the segment)."""
        t = torch.as_tensor(np.asarray(t, dtype=np.float64))
        which = torch.zeros(len(t), dtype=torch.long) if which is None else torch.as_tensor(which).long()
        return evaluate(self.pieces(), self.is_ellipse, self.segments, which, t)

    def moving(self) -> np.ndarray:
        """Per piece of :meth:`pieces` (in order), whether the curve moves along it: False for a
        polyline segment of zero length (a point repeated consecutively), which is no part of
        the curve's path; always True for an ellipse (a point ellipse is refused)."""
        if self.is_ellipse:
            return np.ones(self.count, dtype=bool)
        p = self.points
        steps = np.roll(p, -1, axis=1)[:, : self.segments] - p[:, : self.segments]
        return (steps != 0).any(2).reshape(-1)

    def lengths(self) -> np.ndarray:
        """Euclidean arc length of every curve, positive (a point is refused): exact for
        polylines (zero-length segments add 0); for an ellipse 4a E(1 − b²/a²) with the
        semi-axes a ≥ b from the Gram matrix of (u, v) and E the complete elliptic integral of
        the second kind (``scipy.special.ellipe``), so a flat ellipse (b = 0) is 4a, its segment
        there and back. Vectors are scaled by the power of two nearest their largest entry
        first, so that squares neither underflow to a zero length nor overflow; a power of two
        scales exactly, so lengths of ordinary size are those of the plain formulas, bit for bit."""
        if not self.is_ellipse:
            p = self.points
            steps = np.diff(np.concatenate([p, p[:, :1]], axis=1) if self.closed else p, axis=1)
            scale = _power_of_two(np.abs(steps).max(2, keepdims=True))
            return (scale[..., 0] * np.linalg.norm(steps / scale, axis=2)).sum(1)
        from scipy.special import ellipe

        scale = _power_of_two(np.maximum(np.abs(self.u).max(1), np.abs(self.v).max(1))[:, None])
        u, v = self.u / scale, self.v / scale  # largest entry in [0.5, 1): a² >= 1/4 (or u = v = 0)
        uu, vv, uv = (u * u).sum(1), (v * v).sum(1), (u * v).sum(1)
        half_trace, diff = (uu + vv) / 2, np.hypot((uu - vv) / 2, uv)
        big = half_trace + diff  # a², the larger eigenvalue of the 2×2 Gram matrix
        det = np.maximum(uu * vv - uv * uv, 0.0)
        positive = big > 0
        big_safe = np.where(positive, big, 1.0)
        small = np.where(positive, det / big_safe, 0.0)  # b², without the cancellation of half_trace − diff
        m = np.where(positive, 1 - small / big_safe, 0.0)
        return scale[:, 0] * 4 * np.sqrt(big) * ellipe(np.clip(m, 0.0, 1.0))

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path, *, force: bool = False) -> None:
        """Write an ``.npz`` that :func:`load_trajectories` reads back into the same curves:
        ``center``, ``u``, ``v`` or ``points`` and ``closed``, plus ``indices`` and ``kind``."""
        arrays: dict[str, np.ndarray] = {"kind": np.array(self.kind)}
        if self.is_ellipse:
            arrays.update(center=self.center, u=self.u, v=self.v)
        else:
            arrays.update(points=self.points, closed=np.array(self.closed))
        if self.indices is not None:
            arrays["indices"] = self.indices
        with atomic_output(path, what="trajectories file", force=force) as f:
            np.savez(f, **arrays)

    def same_curves(self, other: Trajectories) -> bool:
        """Whether ``other`` holds exactly the same curves (bit for bit)."""
        if self.family != other.family:
            return False
        keys = ELLIPSE_KEYS if self.is_ellipse else ("points",)
        return all(np.array_equal(getattr(self, k), getattr(other, k)) for k in keys)


def _power_of_two(largest: np.ndarray) -> np.ndarray:
    """2^e with ``largest`` = f · 2^e, 0.5 ≤ f < 1 (1 where ``largest`` is 0): dividing by it
    is exact."""
    _, exponent = np.frexp(largest)
    return np.where(largest > 0, np.ldexp(1.0, exponent), 1.0)


def _floats(a: object, key: str, where: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TsensError(f"{where}: key '{key}' must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        expected = "T × d" if ndim == 2 else "T × k × d"
        raise TsensError(f"{where}: key '{key}' must be {ndim}-D ({expected}), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise TsensError(f"{where}: key '{key}' contains NaN or Inf")
    return arr


def evaluate(
    pieces: torch.Tensor, ellipse: bool, segments: int, which: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """x(t) for curve ``which[i]`` at curve parameter ``t[i]`` from :meth:`Trajectories.pieces`
    (works for any trailing width: input points, or pre-activation coefficients)."""
    t = t.to(pieces.device, torch.float64)
    which = which.to(pieces.device)
    if ellipse:
        c = pieces[which]
        return c[:, 0] + torch.cos(t)[:, None] * c[:, 1] + torch.sin(t)[:, None] * c[:, 2]
    seg = torch.clamp(torch.floor(t), 0, segments - 1)
    s = t - seg
    c = pieces[which * segments + seg.long()]
    return c[:, 0] + s[:, None] * c[:, 1]


# ---------------------------------------------------------------------- makers


def _inputs(dataset: Dataset, positions: np.ndarray) -> np.ndarray:
    """Network inputs (float64, len × d) of the samples at ``positions``, preprocessed as the set's."""
    raw = np.asarray(dataset.x[np.asarray(positions).reshape(-1)])
    return dataset.transform(raw, dtype=torch.float64).numpy()


def check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise TsensError(f"`count` must be a positive number of trajectories, got {count!r}")


def ellipses_through_data(dataset: Dataset, count: int, seed: int = 0) -> Trajectories:
    """``count`` ellipses, each through three distinct samples x₁, x₂, x₃ of ``dataset`` drawn with
    ``numpy.random.default_rng(seed)``: c = (x₁ + x₂ + x₃)/3, u = x₁ − c, v = (2/√3)(x₂ − c + u/2),
    so x(0) = x₁, x(2π/3) = x₂, x(4π/3) = x₃ ([N] App. A.5.2). ``dataset`` must be prepared
    (:func:`tsens.stream.prepared_for`): the curves live in the network's input space. Distinct
    samples can have equal inputs (duplicates in the data, or after cropping): two equal or three
    collinear inputs give a flat ellipse, a segment traversed there and back, counted as such;
    three equal inputs give a point, and the curves are refused with its data indices."""
    check_count(count)
    if len(dataset) < 3:
        raise TsensError(
            f"`trajectory` ellipse needs at least 3 samples; data set {dataset.spec!r} has {len(dataset)}"
        )
    rng = np.random.default_rng(seed)
    positions = np.stack([rng.choice(len(dataset), size=3, replace=False) for _ in range(count)])
    x = _inputs(dataset, positions).reshape(count, 3, -1)
    c = x.mean(1)
    u = x[:, 0] - c
    v = (2 / math.sqrt(3)) * (x[:, 1] - c + u / 2)
    return Trajectories("ellipse", c, u, v, indices=dataset.indices[positions], source="ellipse")


def random_ellipses(dim: int, count: int, seed: int = 0) -> Trajectories:
    """``count`` zero-centred ellipses with axes u, v ~ N(0, I_dim) ([N] App. A.5.2)."""
    check_count(count)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((count, dim))
    v = rng.standard_normal((count, dim))
    return Trajectories("random-ellipse", np.zeros((count, dim)), u, v, source="random-ellipse")


def translation_polygons(dataset: Dataset, count: int, seed: int = 0) -> Trajectories:
    """``count`` closed polygons, each through the W horizontal translations (one pixel at a time,
    wrapping around) of one image of ``dataset`` (distinct images while there are enough): the raw
    image is shifted, then preprocessed exactly as the data set's samples (``Dataset.transform``).
    An image that every shift leaves unchanged (after preprocessing) gives a point, and the curves
    are refused with its data index; shifts equal to the previous one give zero-length segments,
    which change nothing (module docstring)."""
    check_count(count)
    shape = dataset.image_shape  # (C, H, W), also for images stored flat (digits)
    if shape is None:
        raise TsensError(
            f"`trajectory` translations needs images (C × H × W samples); data set {dataset.spec!r} has "
            f"samples of shape {dataset.sample_shape}"
        )
    width = shape[2]
    if width < 2:
        raise TsensError(f"`trajectory` translations needs images at least 2 pixels wide, got {shape}")
    rng = np.random.default_rng(seed)
    replace = count > len(dataset)
    positions = rng.choice(len(dataset), size=count, replace=replace)
    raw = np.asarray(dataset.x[positions]).reshape(count, *shape)
    shifted = np.stack([np.roll(raw, s, axis=-1) for s in range(width)], axis=1)  # T × W × C × H × W
    flat = shifted.reshape(count * width, *dataset.sample_shape)
    points = dataset.transform(flat, dtype=torch.float64).numpy()
    return Trajectories(
        "translations",
        points=points.reshape(count, width, -1),
        closed=True,
        indices=dataset.indices[positions][:, None],
        source="translations",
    )


def load_trajectories(path: str | Path) -> Trajectories:
    """Curves from an ``.npz``: ``center``, ``u``, ``v`` (T × d each) for ellipses, or ``points``
    (T × k × d) for closed polygons, with ``closed=False`` for open polylines; optional
    ``indices`` (T × m integers) and ``kind``. Errors name the file and the key."""
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise TsensError(f"trajectory file {where!r} not found")
    expect_npz(p)  # a .npy or a text file gets a plain message, not NumPy's pickle advice
    try:
        with np.load(p, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise TsensError(f"{where}: not a readable .npz file ({exc})") from None
    keys = set(data)
    known = {"center", "u", "v", "points", "closed", "indices", "kind"}
    if "points" not in keys and not keys & set(ELLIPSE_KEYS):
        raise TsensError(
            f"{where}: expected keys 'center', 'u', 'v' (ellipses) or 'points' (polylines); found "
            f"{', '.join(sorted(keys)) or 'none'}"
        )
    unknown = sorted(keys - known)
    if unknown:
        raise TsensError(f"{where}: unknown key '{unknown[0]}' (expected {', '.join(sorted(known))})")
    closed = True
    if "closed" in data:
        c = data["closed"]
        if c.shape != () or c.dtype.kind not in "biu":
            raise TsensError(f"{where}: key 'closed' must be one boolean, got {c.dtype} of shape {c.shape}")
        closed = bool(c)
        if "points" not in data:
            raise TsensError(f"{where}: key 'closed' applies to 'points' (polylines) only")
    kind = "file"
    if "kind" in data:
        k = data["kind"]
        if k.shape != () or k.dtype.kind != "U":
            raise TsensError(f"{where}: key 'kind' must be one string")
        kind = str(k)
    return Trajectories(
        kind,
        data.get("center"),
        data.get("u"),
        data.get("v"),
        data.get("points"),
        closed=closed,
        indices=data.get("indices"),
        source=where,
    )


def curves_file(kind: str) -> Trajectories | None:
    """The curves of a ``trajectory`` that names a file, read once (None for a named kind); a
    name that is neither a kind nor an ``.npz`` file is refused."""
    if kind in TRAJECTORY_KINDS:
        return None
    if Path(kind).suffix.lower() != ".npz" and not Path(kind).is_file():
        names = ", ".join(TRAJECTORY_KINDS)
        raise TsensError(f"`trajectory` {kind!r}: expected {names} or an .npz file of curves")
    return load_trajectories(kind)


def make_trajectories(
    kind: str,
    dataset: Dataset | None,
    dim: int,
    count: int,
    seed: int = 0,
    curves: Trajectories | None = None,
) -> Trajectories:
    """The ``count`` curves of ``kind`` (a name of :data:`~tsens.choices.TRAJECTORY_KINDS`, or an
    ``.npz`` path) for a network with ``dim`` inputs; ``dataset`` (prepared for that network) is
    needed by ``ellipse`` and ``translations``. Curves from a file keep their own count
    (``curves``: the file's, already read by :func:`curves_file`)."""
    if kind in ("ellipse", "translations"):
        if dataset is None:
            raise TsensError(f"`trajectory` {kind} needs a data set")
        maker = ellipses_through_data if kind == "ellipse" else translation_polygons
        traj = maker(dataset, count, seed)
    elif kind == "random-ellipse":
        traj = random_ellipses(dim, count, seed)
    else:
        traj = curves if curves is not None else curves_file(kind)
        assert traj is not None
    if traj.dim != dim:
        key = "center" if traj.is_ellipse else "points"
        raise TsensError(
            f"{traj.source}: key '{key}' has {traj.dim} inputs per point but the network expects {dim}"
        )
    return traj
