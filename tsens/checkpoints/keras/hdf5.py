"""What Keras HDF5 files hold, read with h5py in an isolated child process.

Two layouts:

* Keras 3 ``.weights.h5`` (``model.save_weights``; also ``model.weights.h5`` inside a
  ``.keras`` archive): ``layers/<key>/vars/0``, ``1``, ... where ``<key>`` is the layer's class
  in snake case, numbered per class in model order (``dense``, ``dense_1``,
  ``batch_normalization``) and the ``vars`` group's ``name`` attribute is the layer's name.
  Variables are numbered, not named: a Dense holds kernel[, bias], a BatchNormalization
  [gamma][, beta], moving_mean, moving_variance. Without a config the layers are in the order
  their variables lie in the file (Keras writes them in model order; failing that, chunked
  variables having no offset, the keys' numbers when all layers are of one class) and what a
  layer is comes from its class and number of variables (three BatchNormalization variables
  are ambiguous, and refused); no activation is recorded and the BatchNorm epsilon is Keras's
  default, 1e-3.
* legacy HDF5 ``.h5``/``.hdf5`` (Keras 2 ``model.save``/``save_weights``; Keras 3
  ``model.save("x.h5")``; PGDL's ``weights.hdf5``): the root, or its ``model_weights`` group,
  lists ``layer_names`` in model order; each layer's group lists ``weight_names``
  (``dense/kernel:0``, ``sequential/dense/kernel``). A root ``model_config`` attribute holds the
  model's config (:mod:`.config`), ``keras_version`` and ``backend`` become metadata.

A Dense ``<name>``'s kernel (in × out) becomes ``<name>.weight`` transposed, its bias
``<name>.bias``; a BatchNormalization's gamma, beta, moving_mean, moving_variance become
``.weight``, ``.bias``, ``.running_mean``, ``.running_var`` (with only one of gamma and beta,
the other is filled in as ones or zeros: torch's affine BatchNorm has both).

Safety: every read of HDF5 content runs in a forked child with a time and a memory limit
(:mod:`.isolated`; the HDF5 library hangs, crashes and over-allocates on corrupt files). A
variable that is not a floating-point array, or declares more bytes than its file could hold
(four times the file plus 1 MiB, at most :data:`MAX_BYTES`), is refused before it is read;
anything h5py cannot parse is one line, ``<path>: not a readable Keras HDF5 file (...)``.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import TsensError, first_line
from ...extras import require
from ..base import Weights, check_file
from . import isolated
from .config import (
    BN_VARS,
    DENSE_VARS,
    KERAS_BN_EPS,
    READS,
    SKIPPED_KEYS,
    Planned,
    Spec,
    keras_specs,
    parse_json,
    plan,
)

MAX_BYTES = 8 << 30  # no variable is read beyond this
NOT_READABLE = "not a readable Keras HDF5 file"
_TORCH_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_TORCH_NAMES.update(moving_mean="running_mean", moving_variance="running_var")

Arrays = dict[str, np.ndarray]
Read = tuple[Arrays, dict[str, str]]  # what a child read gives: torch-named arrays, metadata


def h5py_module(path: Path) -> Any:
    """h5py, or a one-line refusal naming ``path`` and the extra to install."""
    try:
        return require("h5py", "keras", "reading Keras checkpoints")
    except TsensError as e:
        raise TsensError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Stored:
    """One layer's variables in the file: ``names`` are the variable names (legacy files) or
    None each (Keras 3 numbers them); ``key`` is its group, ``cls`` the snake-case class a
    Keras 3 group key gives (None in legacy files), ``offset`` where its variables start."""

    name: str
    key: str
    cls: str | None
    names: tuple[str | None, ...]
    datasets: tuple[Any, ...]
    offset: int | None = None


Contents = tuple[list[Stored], list[Spec] | None, dict[str, str], bool]


def _texts(value: Any) -> list[str]:
    """An HDF5 string-array attribute (bytes or str items; an empty float array) as strings."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --- the child read ------------------------------------------------------------------------


@contextmanager
def h5_file(path: Path, source: Path | io.BytesIO, what: str = "") -> Iterator[Any]:
    """The open HDF5 file; whatever h5py raises while it is used becomes one line."""
    h5py = h5py_module(path)
    try:
        with h5py.File(source, "r") as f:
            yield f
    except TsensError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise TsensError(f"{path}: {NOT_READABLE} ({what}{first_line(e)})") from None
    except OverflowError as e:  # h5py's driver for in-memory files, asked to read at an offset past 2**63
        raise TsensError(f"{path}: {NOT_READABLE} ({what}{first_line(e)})") from None


def isolated_read(
    path: Path, source: Path | bytes, body: Callable[[Any], Read], what: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``body(f)`` on the open HDF5 file ``source`` (a path, or the bytes of an archive member
    ``what`` names), run in a forked child (:mod:`.isolated`); its arrays become tensors.
    Refusals name ``path``."""
    h5py = h5py_module(path)  # imported before the fork; a missing h5py is refused here

    def job() -> Read:
        with h5_file(path, source if isinstance(source, Path) else io.BytesIO(source), what) as f:
            return body(f)

    lock = getattr(getattr(h5py, "_objects", None), "phil", None)  # h5py's lock around HDF5 calls
    return isolated.run(path, job, source, what=what, problem=NOT_READABLE, hold=lock)


# --- what the file holds -------------------------------------------------------------------


def keras3_stored(path: Path, f: Any) -> tuple[list[Stored], bool]:
    """The layers of a Keras 3 weights file and whether they are in model order: the order of
    their variables in the file, or (where some have no offset) their keys' numbers if all are
    of one class."""
    h5py = h5py_module(path)
    group = f["layers"]
    if not isinstance(group, h5py.Group):
        raise TsensError(f"{path}: 'layers' is not a group; expected layers/<layer>/vars")
    stored: list[Stored] = []
    for key in group:
        layer, cls = group[key], re.sub(r"_\d+$", "", key)
        if cls in SKIPPED_KEYS:
            continue
        if not isinstance(layer, h5py.Group) or any(k != "vars" for k in layer):
            inner = next((k for k in layer if k != "vars"), "") if isinstance(layer, h5py.Group) else ""
            raise TsensError(
                f"{path}: layers/{key} holds {inner or 'no group'} beside its variables (a nested model or "
                "a layer with sublayers); tsens reads a flat chain of Dense and BatchNormalization layers"
            )
        variables = layer.get("vars")
        if variables is None or not len(variables):
            continue
        if not isinstance(variables, h5py.Group) or not all(k.isdigit() for k in variables):
            raise TsensError(f"{path}: layers/{key}/vars is not a group of numbered variables")
        datasets = tuple(variables[k] for k in sorted(variables, key=int))
        offsets = [d.id.get_offset() if isinstance(d, h5py.Dataset) else None for d in datasets]
        name = _text(variables.attrs.get("name", key))
        offset = None if None in offsets else min(o for o in offsets if o is not None)
        stored.append(Stored(name, key, cls, (None,) * len(datasets), datasets, offset))
    if all(s.offset is not None for s in stored):
        return sorted(stored, key=lambda s: s.offset or 0), True
    if len({s.cls for s in stored}) == 1:
        return sorted(stored, key=lambda s: int(s.key.rpartition("_")[2] if s.key != s.cls else 0)), True
    return stored, False


def _legacy_stored(path: Path, root: Any) -> list[Stored]:
    """The layers of a legacy file, in the order of its ``layer_names``."""
    h5py = h5py_module(path)
    stored = []
    for name in _texts(root.attrs["layer_names"]):
        group = root.get(name)
        if not isinstance(group, h5py.Group):
            raise TsensError(f"{path}: layer {name!r} is in layer_names but the file has no group for it")
        weight_names = _texts(group.attrs.get("weight_names", []))
        datasets = tuple(group.get(w) for w in weight_names)
        missing = next((w for w, d in zip(weight_names, datasets, strict=True) if d is None), None)
        if missing is not None:
            raise TsensError(f"{path}: layer {name!r} lists weight {missing!r}, which the file does not hold")
        variables = tuple(w.rsplit("/", 1)[-1].split(":", 1)[0] for w in weight_names)
        stored.append(Stored(name, name, None, variables, datasets))
    return stored


def contents(path: Path, f: Any) -> tuple[list[Stored], Any, dict[str, str], bool]:
    """A Keras HDF5 file's layers, its model config (None without), its scalar attributes as
    metadata, and whether the layers are in model order."""
    root = f.get("model_weights", f)
    if "layer_names" in root.attrs:
        metadata = {k: _text(v) for k, v in f.attrs.items() if k in ("keras_version", "backend")}
        config = f.attrs.get("model_config")
        config = None if config is None else parse_json(path, _text(config), "model_config")
        return _legacy_stored(path, root), config, metadata, True
    if "layers" in f:
        stored, ordered = keras3_stored(path, f)
        return stored, None, {}, ordered
    raise TsensError(
        f"{path}: holds no Keras weights; expected a Keras 3 'layers' group (.weights.h5) or a Keras 2 "
        "'layer_names' attribute (.h5)"
    )


def _inferred(path: Path, stored: Stored) -> Planned:
    """What a layer is, from its variables alone (a file without config)."""
    where, names, n = f"{path}: layer {stored.name!r}", stored.names, len(stored.datasets)
    if all(v is not None for v in names):  # legacy files name the variables
        kind, known = ("dense", DENSE_VARS) if "kernel" in names else ("bn", BN_VARS)
        if (kind == "bn" and not {"moving_mean", "moving_variance"} & set(names)) or set(names) - set(known):
            raise TsensError(
                f"{where} holds {', '.join(map(str, names))}; tsens reads Dense (kernel, bias) and "
                "BatchNormalization (gamma, beta, moving_mean, moving_variance) layers"
            )
        return Planned(stored.name, kind, tuple(v for v in known if v in names))
    if stored.cls == "dense" and n in (1, 2):
        return Planned(stored.name, "dense", DENSE_VARS[:n])
    if stored.cls == "batch_normalization" and n in (2, 4):
        return Planned(stored.name, "bn", BN_VARS[4 - n :])
    if stored.cls == "batch_normalization" and n == 3:
        raise TsensError(
            f"{where} is a BatchNormalization with 3 variables: gamma (scale) or beta (center) is missing "
            "and a weights-only file does not say which; load the .keras file, which has the config"
        )
    raise TsensError(f"{where} is a {stored.cls} layer with {n} variables; tsens reads {READS}")


# --- the variables -------------------------------------------------------------------------


def _read(path: Path, label: str, dataset: Any, limit: int) -> np.ndarray:
    """One variable, after checking its type and that its declared size is plausible."""
    h5py = h5py_module(path)
    if not isinstance(dataset, h5py.Dataset) or dataset.shape is None:
        raise TsensError(f"{path}: variable {label!r} is not an array")
    dtype = dataset.dtype
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise TsensError(f"{path}: variable {label!r} has dtype {dtype}; expected floating-point weights")
    size = math.prod(dataset.shape) * dtype.itemsize
    if size > limit:
        raise TsensError(
            f"{path}: variable {label!r} declares shape {tuple(dataset.shape)} ({size:,} bytes), more "
            "than the file can hold; the file is corrupt"
        )
    array = np.asarray(dataset[()])
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))


def _arrays(path: Path, planned: list[Planned], stored: list[Stored], limit: int) -> Arrays:
    """The torch-named arrays of the planned layers, read from the file's layers."""
    by_name = {s.name: s for s in stored}
    arrays: Arrays = {}
    for p in planned:
        s = by_name.get(p.name)
        if s is None:
            raise TsensError(
                f"{path}: layer {p.name!r} is in the model config but its weights are not in the file"
            )
        if all(v is not None for v in s.names):
            if sorted(map(str, s.names)) != sorted(p.variables):
                raise TsensError(
                    f"{path}: layer {p.name!r} holds {', '.join(map(str, s.names)) or 'no weights'}; "
                    f"expected {', '.join(p.variables)}"
                )
            bound = {str(v): d for v, d in zip(s.names, s.datasets, strict=True)}
        elif len(s.datasets) != len(p.variables):
            raise TsensError(
                f"{path}: layer {p.name!r} holds {len(s.datasets)} variables; expected "
                f"{len(p.variables)} ({', '.join(p.variables)})"
            )
        else:
            bound = dict(zip(p.variables, s.datasets, strict=True))
        for variable in p.variables:
            a = _read(path, f"{p.name}/{variable}", bound[variable], limit)
            if variable == "kernel":
                if a.ndim != 2:
                    raise TsensError(
                        f"{path}: layer {p.name!r} has a {a.ndim}-D kernel {tuple(a.shape)}; a convolution?"
                        " tsens reads Dense layers (2-D kernels)"
                    )
                if p.units is not None and a.shape[1] != p.units:
                    raise TsensError(
                        f"{path}: layer {p.name!r} has a kernel of shape {tuple(a.shape)}; expected "
                        f"{p.units} units as its config says"
                    )
                a = np.ascontiguousarray(a.T)
            arrays[f"{p.name}.{_TORCH_NAMES[variable]}"] = a
        if p.kind == "bn" and len({"gamma", "beta"} & set(p.variables)) == 1:
            # torch's affine BatchNorm has both: without scale γ is 1, without center β is 0
            mean = arrays[f"{p.name}.running_mean"]
            key, fill = (
                ("bias", np.zeros_like(mean)) if "gamma" in p.variables else ("weight", np.ones_like(mean))
            )
            arrays[f"{p.name}.{key}"] = fill
    used = {p.name for p in planned}
    extra = next((s.name for s in stored if s.datasets and s.name not in used), None)
    if extra is not None:
        raise TsensError(
            f"{path}: the file holds weights of layer {extra!r}, which the model config does not list"
        )
    return arrays


def layer_arrays(path: Path, found: Contents, version: str, *, read: bool, limit: int) -> Read:
    """The arrays (only when ``read``, none beyond ``limit`` bytes) and metadata of a file's
    layers and, where there is one, its config."""
    stored, specs, metadata, ordered = found
    if specs is None:
        planned = [_inferred(path, s) for s in stored if s.datasets]
        derived = {"tsens.layers": ",".join(p.name for p in planned)} if ordered else {}
        if any(p.kind == "bn" for p in planned):
            derived["tsens.bn_eps"] = repr(KERAS_BN_EPS)
    else:
        planned, derived = plan(path, specs, version)
    arrays = _arrays(path, planned, stored, limit) if read else {}
    return arrays, {**metadata, **derived}


def variable_limit(size: int) -> int:
    """The most bytes a variable of a ``size``-byte file may declare."""
    return min(MAX_BYTES, 4 * size + (1 << 20))


def read_file(path: Path, *, read: bool) -> Weights:
    """A Keras 3 ``.weights.h5`` or legacy ``.h5``/``.hdf5`` file: its tensors (when ``read``)
    and metadata."""
    check_file(path)
    most = variable_limit(path.stat().st_size)

    def body(f: Any) -> Read:
        stored, config, metadata, ordered = contents(path, f)
        specs = None if config is None else keras_specs(path, config)
        version = metadata.get("keras_version", "")
        return layer_arrays(path, (stored, specs, metadata, ordered), version, read=read, limit=most)

    tensors, metadata = isolated_read(path, path, body)
    return Weights(tensors, metadata, (path,))
