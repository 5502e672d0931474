"""From torch-named tensors to a :class:`~tsens.network.Network`: every format's reader gives
its weights under PyTorch's names (``<prefix>.weight`` as out × in, ``.bias``,
``.running_mean``/``.running_var``); this module groups them into modules, orders them and
chains them.

Modules are found by key prefix: a 2-D ``weight`` (+ ``bias``) is a Linear,
``running_mean``/``running_var`` (+ 1-D ``weight``/``bias``) a BatchNorm1d. Their order comes
from the numbers in the prefixes (``0``, ``net.3``, ``fc2``, ``layers.1``), with ``out``,
``output``, ``head`` or ``classifier`` last; when that is not enough, the user gives the order
(``layers=`` or a ``tsens.layers`` metadata entry). Anything else is refused with the key.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import TsensError
from ..network import BatchNorm, Layer, Network
from ..piecewise import parse_activation

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


def strip_prefixes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``model.``/``module.``/``_orig_mod.`` for as long as every key starts with one."""
    while True:
        prefix = next((p for p in PREFIXES if tensors and all(k.startswith(p) for k in tensors)), None)
        if prefix is None:
            return tensors
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}


def checked_weights(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors with prefixes stripped and ``num_batches_tracked`` dropped; every one must be
    floating-point and finite (shape-only ``meta`` tensors have no values to check), and there
    must be at least one."""
    kept: dict[str, torch.Tensor] = {}
    for key, t in strip_prefixes(tensors).items():
        if key.rsplit(".", 1)[-1] == "num_batches_tracked":
            continue
        if not t.is_floating_point():
            raise TsensError(f"{path}: key {key!r} holds a {t.dtype} tensor; expected floating-point weights")
        if not t.is_meta and not bool(torch.isfinite(t.reshape(-1)).all()):  # flat: isfinite stops at 64 dims
            raise TsensError(f"{path}: key {key!r} contains NaN or Inf values; expected finite weights")
        kept[key] = t
    if not kept:
        raise TsensError(f"{path}: the checkpoint holds no weight tensors; expected a network's state dict")
    return kept


def build_network(
    path: Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    *,
    activation: str | None,
    layers: Sequence[str] | None,
    sha256: str,
) -> Network:
    """The float64 CPU network of checked torch-named ``tensors``; see
    :func:`tsens.checkpoints.load_network` for how ``activation`` and ``layers`` apply. Shape-only
    ``meta`` tensors stay on the meta device: a network with shapes (``widths``) and no values."""
    tensors = {
        k: v.detach().to(device="meta" if v.is_meta else "cpu", dtype=torch.float64)
        for k, v in tensors.items()
    }
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
                stacklevel=3,
            )
    return Network(chain, act, metadata, path=str(path), sha256=sha256)


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
