"""Reading checkpoints into a :class:`~tsens.network.Network`.

Formats: ``.safetensors`` and PyTorch files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``), the latter
only through ``torch.load(..., weights_only=True)``: a file that needs anything but tensors
and plain containers to unpickle is refused, never loaded with code execution.

Layouts: a state dict, possibly wrapped (``state_dict``, ``model_state_dict``, ``model``,
``module``; Lightning checkpoints) and possibly prefixed (``model.``, ``module.``,
``_orig_mod.``). Modules are found by key prefix: a 2-D ``weight`` (+ ``bias``) is a Linear,
``running_mean``/``running_var`` (+ 1-D ``weight``/``bias``) a BatchNorm1d. Their order comes
from the numbers in the prefixes (``0``, ``net.3``, ``fc2``, ``layers.1``), with ``out``,
``output``, ``head`` or ``classifier`` last; when that is not enough, the user gives the order
(``layers=`` or a ``tsens.layers`` metadata entry). Anything else is refused with the key.

Every refusal is a one-line :class:`~tsens.errors.TsensError` that starts with the file's path;
a file torch cannot parse is reported as truncated or corrupt, without torch's internals.
:func:`read_metadata` gives a checkpoint's metadata without reading its weights.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .errors import TsensError
from .network import BatchNorm, Layer, Network
from .piecewise import parse_activation

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
PREFIXES = ("model.", "module.", "_orig_mod.")
HEAD_NAMES = ("out", "output", "head", "classifier")
PARAM_NAMES = ("weight", "bias", "running_mean", "running_var")
DEFAULT_BN_EPS = 1e-5

_ATTENTION = re.compile(r"attn|attention|q_proj|k_proj|v_proj|in_proj|out_proj|qkv")
_LAYER_NORM = re.compile(r"(^|[._])(ln|layer_?norm|norm)(\d*)($|[._])|layernorm|groupnorm|group_norm")
_FC_ONLY = "tsens supports fully connected networks only"
_LAYERS_HINT = (
    "give `layers` (the key prefixes in order, comma-separated) or store a tsens.layers metadata entry"
)
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format starts with a local file header


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The floating-point tensors of a checkpoint (unwrapped, prefixes stripped, all finite,
    ``num_batches_tracked`` dropped) and its metadata as strings."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".safetensors":
        tensors, metadata = _read_safetensors(path)
    else:
        tensors, metadata = _read_torch(path)
    tensors = _strip_prefixes(tensors)
    kept: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if key.rsplit(".", 1)[-1] == "num_batches_tracked":
            continue
        if not t.is_floating_point():
            raise TsensError(f"{path}: key {key!r} holds a {t.dtype} tensor; expected floating-point weights")
        if not bool(torch.isfinite(t).all()):
            raise TsensError(f"{path}: key {key!r} contains NaN or Inf values; expected finite weights")
        kept[key] = t
    if not kept:
        raise TsensError(f"{path}: the checkpoint holds no weight tensors; expected a network's state dict")
    return kept, metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint, as :func:`load_network` gives it in ``Network.metadata``,
    without reading the weights where the format allows: the header of a ``.safetensors``
    file; a memory-mapped load of a (zip) ``torch.save`` file, whose tensor data is never read;
    a full weights-only load of a legacy (non-zip) torch file. Missing, corrupt and
    code-carrying files are refused as by :func:`load_network`."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise _corrupt_safetensors(path, e) from None
    with path.open("rb") as f:
        is_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    obj = _torch_load(path, mmap=is_zip)
    return _unwrap_metadata(obj)[1]


def load_network(
    path: str | Path, *, activation: str | None = None, layers: Sequence[str] | None = None
) -> Network:
    """The float64 CPU network stored in ``path``.

    One rule for settings the checkpoint records (the same as for preprocessing in
    :mod:`tsens.stream`): a given ``activation`` wins over the metadata entry
    ``tsens.activation``, with a warning when they differ; without one the record applies, else
    relu. ``layers`` (key prefixes in order) overrides ``tsens.layers`` and the order inferred
    from the keys.
    """
    path = Path(path)
    tensors, metadata = read_checkpoint(path)
    tensors = {k: v.detach().to(device="cpu", dtype=torch.float64) for k, v in tensors.items()}
    modules = _group_modules(path, tensors)
    source = "`layers`"
    if layers is None and metadata.get("tsens.layers"):
        layers = [p.strip() for p in metadata["tsens.layers"].split(",")]
        source = "metadata 'tsens.layers'"
    if layers is not None:
        order, explicit = _explicit_order(path, modules, layers, source), True
    else:
        order, explicit = _inferred_order(path, modules), False
    eps = _bn_eps(path, metadata)
    chain = _build_chain(path, order, eps, explicit)
    recorded = metadata.get("tsens.activation")
    if activation is None:
        act = parse_activation(recorded or "relu", what=f"{path}: metadata 'tsens.activation'")
    else:
        act = parse_activation(activation)
        if recorded is not None and recorded.strip().lower().replace("-", "_") != act.spec:
            warnings.warn(
                f"{path}: the given activation {act.spec} differs from the one the checkpoint records "
                f"(tsens.activation = {recorded}); using the given one",
                stacklevel=2,
            )
    return Network(chain, act, metadata, path=str(path), sha256=file_sha256(path))


# --- reading files -------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise TsensError(f"{path}: no such file")
    if not path.is_file():
        raise TsensError(f"{path}: is not a file; expected a checkpoint file")
    if path.suffix.lower() not in SUFFIXES:
        raise TsensError(
            f"{path}: unknown checkpoint suffix {path.suffix!r}; expected one of {', '.join(SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise TsensError(f"{path}: the file is empty (0 bytes)")


def _brief(e: BaseException) -> str:
    """The first line of an exception message, shortened."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _corrupt_safetensors(path: Path, e: BaseException) -> TsensError:
    return TsensError(f"{path}: the file is truncated or not a valid safetensors file ({_brief(e)})")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is no dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt_safetensors(path, e) from None
    return tensors, metadata


def _corrupt_torch(path: Path) -> TsensError:
    return TsensError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt)")


def _refuse_code(path: Path, name: str | None) -> TsensError:
    what = f" ({name})" if name else ""
    return TsensError(
        f"{path}: the file contains objects other than tensors{what} and tsens refuses to unpickle "
        "code; save the state dict as .safetensors (safetensors.torch.save_file(model.state_dict(), ...))"
    )


def _pickled_global(path: Path) -> str | None:
    """The first thing the file's leading pickle imports that is not torch's own (a class or
    function a weights-only load refuses), e.g. ``io.open``; None when it imports nothing else or
    is no complete pickle. Opcodes are only scanned (pickletools), never executed."""
    pushed: list[str | None] = []  # what each pushing opcode put on the stack, strings only
    memo: dict[int, str | None] = {}
    names: list[str] = []
    try:
        with path.open("rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    module, name = pushed[-2:] if len(pushed) >= 2 else [None, None]
                    names.append(f"{module}.{name}" if module and name else "an unnamed global")
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif op.name != "FRAME":
                    pushed.append(arg if isinstance(arg, str) else None)
    except Exception:  # pickletools raises ValueError and friends on anything not a pickle
        return None
    safe = ("torch.", "collections.OrderedDict", "_codecs.encode")
    return next((n for n in names if not n.startswith(safe)), None)


def _torch_load(path: Path, *, mmap: bool = False) -> Mapping[Any, Any]:
    """``torch.load(weights_only=True)`` of ``path`` as a mapping, every failure a one-line
    TsensError: code-carrying pickles are refused naming what they import, anything else torch
    cannot parse (random bytes, a truncated or foreign zip, text) is called corrupt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported (?:global|class): (?:GLOBAL )?([\w.]+)", str(e))
        if found:
            raise _refuse_code(path, found.group(1)) from None
        name = _pickled_global(path)  # e.g. a pickle.dumps, refused before its imports are reached
        if name is not None:
            raise _refuse_code(path, name) from None
        raise _corrupt_torch(path) from None
    except Exception:  # torch raises RuntimeError, EOFError, KeyError, ... on corrupt files
        raise _corrupt_torch(path) from None
    if not isinstance(obj, Mapping):
        raise TsensError(
            f"{path}: holds a {type(obj).__name__}; expected a state dict (a mapping of names to tensors)"
        )
    return obj


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return _unwrap(path, _torch_load(path))


def _scalar_text(value: Any) -> str | None:
    """A metadata string for a str/bool/int/float entry (None for anything else)."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, bool | int | float) else None


def _unwrap_metadata(obj: Mapping[Any, Any]) -> tuple[Mapping[Any, Any], dict[str, str]]:
    """The innermost mapping of ``obj`` (following wrapper keys) and, as metadata strings, the
    scalar entries and ``hyper_parameters`` met on the way (outer entries win)."""
    metadata: dict[str, str] = {}
    while True:
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        for key, value in obj.items():
            if key == "hyper_parameters" and isinstance(value, Mapping):
                for name, hp in value.items():
                    metadata.setdefault(str(name), hp if isinstance(hp, str) else json.dumps(hp, default=str))
            elif (text := _scalar_text(value)) is not None:
                metadata.setdefault(str(key), text)
        if wrapper is None:
            break
        obj = obj[wrapper]
    return obj, metadata


def _unwrap(path: Path, obj: Mapping[Any, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict inside ``obj`` (following wrapper keys) and the scalar entries beside it."""
    obj, metadata = _unwrap_metadata(obj)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(repr(str(k)) for k in list(obj)[:8]) or "none"
        raise TsensError(
            f"{path}: no tensors found (top-level keys: {keys}); expected a state dict, "
            f"possibly under {', '.join(WRAPPER_KEYS)}"
        )
    return tensors, metadata


def _strip_prefixes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``model.``/``module.``/``_orig_mod.`` for as long as every key starts with one."""
    while True:
        prefix = next((p for p in PREFIXES if tensors and all(k.startswith(p) for k in tensors)), None)
        if prefix is None:
            return tensors
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}


# --- modules and their order --------------------------------------------------------------


@dataclass(frozen=True)
class _Module:
    """The tensors under one key prefix: a Linear (``kind == "linear"``) or a BatchNorm1d (``"bn"``)."""

    prefix: str
    kind: str
    params: dict[str, torch.Tensor]

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


def _refuse_unsupported(path: Path, key: str, t: torch.Tensor) -> None:
    lowered = key.lower()
    if "embed" in lowered:
        raise TsensError(f"{path}: key {key!r} looks like an embedding; {_FC_ONLY}")
    if _ATTENTION.search(lowered):
        raise TsensError(f"{path}: key {key!r} looks like attention; {_FC_ONLY}")
    if t.ndim >= 3:
        raise TsensError(
            f"{path}: key {key!r} is a {t.ndim}-D tensor {tuple(t.shape)} (a convolution?); "
            f"{_FC_ONLY} (2-D Linear weights)"
        )


def _group_modules(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, _Module]:
    """Tensors grouped by prefix and classified; anything not understood is refused."""
    for key, t in tensors.items():
        _refuse_unsupported(path, key, t)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key in tensors:
        prefix, _, name = key.rpartition(".")
        if name not in PARAM_NAMES:
            raise TsensError(
                f"{path}: key {key!r} is not understood; expected Linear weight/bias or "
                "BatchNorm1d running_mean/running_var/weight/bias"
            )
        grouped.setdefault(prefix, {})[name] = tensors[key]
    return {prefix: _Module(prefix, _classify(path, prefix, p), p) for prefix, p in grouped.items()}


def _classify(path: Path, prefix: str, p: dict[str, torch.Tensor]) -> str:
    """``"linear"`` or ``"bn"`` for the tensors ``p`` under ``prefix``, after checking their shapes."""

    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if "running_mean" in p or "running_var" in p:
        for name in ("running_mean", "running_var"):
            if name not in p:
                raise TsensError(
                    f"{path}: key {key(name)!r} is missing; a BatchNorm1d needs both running statistics"
                )
        size = tuple(p["running_mean"].shape)
        for name, t in p.items():
            if t.ndim != 1 or tuple(t.shape) != size:
                raise TsensError(
                    f"{path}: key {key(name)!r} has shape {tuple(t.shape)}; expected {size} like the "
                    "BatchNorm1d running_mean (only BatchNorm1d has running statistics)"
                )
        if ("weight" in p) != ("bias" in p):
            missing = "bias" if "weight" in p else "weight"
            raise TsensError(
                f"{path}: key {key(missing)!r} is missing; an affine BatchNorm1d has weight and bias"
            )
        return "bn"
    weight = p.get("weight")
    if weight is None:
        raise TsensError(f"{path}: key {key('bias')!r} has no weight beside it; expected a Linear weight")
    if weight.ndim == 1:
        what = (
            "a LayerNorm"
            if _LAYER_NORM.search(prefix.lower())
            else "a normalisation without running statistics"
        )
        raise TsensError(
            f"{path}: key {key('weight')!r} is 1-D without running statistics ({what}?); "
            "tsens supports Linear and BatchNorm1d layers only"
        )
    if weight.ndim != 2:
        raise TsensError(
            f"{path}: key {key('weight')!r} has shape {tuple(weight.shape)}; expected a 2-D Linear weight"
        )
    bias = p.get("bias")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise TsensError(
            f"{path}: key {key('bias')!r} has shape {tuple(bias.shape)}; expected ({weight.shape[0]},) "
            "to match the Linear weight"
        )
    return "linear"


def _is_head(prefix: str) -> bool:
    return prefix.rsplit(".", 1)[-1] in HEAD_NAMES


def _index(prefix: str) -> tuple[int, ...]:
    """The numbers in a prefix: ``net.0.3`` → (0, 3), ``fc2`` → (2,)."""
    return tuple(int(n) for n in re.findall(r"\d+", prefix))


def _inferred_order(path: Path, modules: dict[str, _Module]) -> list[_Module]:
    """Order by the numbers in the prefixes, Linear before BatchNorm at equal numbers, a head
    (``out``, ``output``, ``head``, ``classifier``) last. Linears must share one naming pattern
    with distinct numbers (BatchNorms likewise), else the order is ambiguous."""
    heads = [m.prefix for m in modules.values() if _is_head(m.prefix)]
    if len(heads) > 1:
        raise TsensError(f"{path}: cannot order layers {heads[0]!r} and {heads[1]!r}; {_LAYERS_HINT}")
    body = [m for m in modules.values() if not _is_head(m.prefix)]
    for kind in ("linear", "bn"):
        first: dict[str, str] = {}  # naming pattern -> first prefix with it
        by_index: dict[tuple[int, ...], str] = {}
        for m in (m for m in body if m.kind == kind):
            first.setdefault(re.sub(r"\d+", "#", m.prefix), m.prefix)
            clash = by_index.setdefault(_index(m.prefix), m.prefix)
            if len(first) > 1 or clash != m.prefix:
                other = clash if clash != m.prefix else next(iter(first.values()))
                raise TsensError(f"{path}: cannot order layers {other!r} and {m.prefix!r}; {_LAYERS_HINT}")
    body.sort(key=lambda m: (_index(m.prefix), m.kind == "bn"))
    return body + [modules[h] for h in heads]


def _explicit_order(
    path: Path, modules: dict[str, _Module], layers: Sequence[str], source: str
) -> list[_Module]:
    """The modules named by ``layers`` in that order; every module must be named exactly once.
    ``source`` names where the order came from (the parameter or the metadata entry)."""
    order: list[str] = []
    for given in layers:
        prefix = given
        for p in PREFIXES:  # accept prefixes as written before model./module. were stripped
            if prefix not in modules and prefix.startswith(p):
                prefix = prefix[len(p) :]
        if prefix not in modules:
            known = ", ".join(sorted(modules))
            raise TsensError(
                f"{path}: {source}: layer {given!r} names no Linear or BatchNorm1d; "
                f"the key prefixes are {known}"
            )
        if prefix in order:
            raise TsensError(f"{path}: {source}: layer {given!r} appears twice in the layer order")
        order.append(prefix)
    for m in modules.values():
        if m.prefix not in order:
            raise TsensError(
                f"{path}: {source}: key {m.key(min(m.params, key=PARAM_NAMES.index))!r} is not used by "
                f"the layer order {','.join(layers)}; expected every Linear and BatchNorm1d to be listed"
            )
    return [modules[p] for p in order]


def _sequential_gap(linear: str, norm: str) -> bool:
    """True when both prefixes are entries of one nn.Sequential with an entry between them."""
    a, b = re.fullmatch(r"(.*?)(\d+)", linear), re.fullmatch(r"(.*?)(\d+)", norm)
    return bool(a and b and a.group(1) == b.group(1) and int(b.group(2)) != int(a.group(2)) + 1)


def _bn_eps(path: Path, metadata: dict[str, str]) -> float:
    text = metadata.get("tsens.bn_eps")
    if text is None:
        return DEFAULT_BN_EPS
    try:
        eps = float(text)
    except ValueError:
        eps = -1.0
    if not eps > 0:
        raise TsensError(f"{path}: metadata 'tsens.bn_eps' is {text!r}; expected a positive number")
    return eps


def _build_chain(path: Path, order: list[_Module], eps: float, explicit: bool) -> tuple[Layer, ...]:
    """Linear (+ BatchNorm) layers whose shapes chain; names are the Linear prefixes."""
    hint = "" if explicit else f" in the inferred order {','.join(m.prefix for m in order)}; {_LAYERS_HINT}"
    layers: list[Layer] = []
    for m in order:
        if m.kind == "linear":
            w = m.params["weight"]
            if layers and layers[-1].out_features != w.shape[1]:
                raise TsensError(
                    f"{path}: key {m.key('weight')!r} has shape {tuple(w.shape)} but the previous layer "
                    f"{layers[-1].name!r} has {layers[-1].out_features} outputs{hint}"
                )
            layers.append(Layer(w, m.params.get("bias"), None, name=m.prefix))
            continue
        if not layers or layers[-1].norm is not None:
            raise TsensError(
                f"{path}: BatchNorm1d {m.prefix!r} does not directly follow a Linear layer{hint}"
            )
        if _sequential_gap(layers[-1].name, m.prefix):
            raise TsensError(
                f"{path}: BatchNorm1d {m.prefix!r} is not directly after Linear {layers[-1].name!r} "
                "(a module without weights, e.g. an activation, sits between); tsens supports "
                "BatchNorm1d only directly after a Linear"
            )
        size = m.params["running_mean"].shape[0]
        if size != layers[-1].out_features:
            raise TsensError(
                f"{path}: key {m.key('running_mean')!r} has {size} features but the Linear "
                f"{layers[-1].name!r} before it has {layers[-1].out_features} outputs{hint}"
            )
        norm = BatchNorm(
            m.params["running_mean"],
            m.params["running_var"],
            eps,
            m.params.get("weight"),
            m.params.get("bias"),
        )
        layers[-1] = Layer(layers[-1].weight, layers[-1].bias, norm, name=layers[-1].name)
    if not layers:
        raise TsensError(f"{path}: no Linear layer found; expected at least one 2-D weight")
    return tuple(layers)
