"""Train the development zoo: a population of small ReLU MLP checkpoints for building and testing
generalization estimators (``tsens estimate-gap``), including the cases where "test = train"
and other simple estimators fail.

Runs on the shipped data sets ``digits`` and ``mnist1d`` (loaded through
:func:`tsens.datasets.load_dataset`). The configurations form a grid of one-axis variations
around a base network per data set (hidden width 32, one hidden layer on digits and two on
mnist1d, AdamW at learning rate 0.002, batch size 64, no weight decay, clean labels, the whole
training set, no BatchNorm), so that for every hyper-parameter axis (width, depth, learning
rate, batch size, weight decay, label noise, training fraction, optimizer, BatchNorm) there are
groups of configurations that differ along that axis only (Jiang et al. 2020's granulated
Kendall τ); :func:`axis_groups` lists them and the README shows them. Every configuration is
trained with three seeds: sibling runs share ``config`` and differ only in ``seed``
(initialization and batch order).

Hard cases on purpose: label-noise runs (20 % and 40 % wrong labels on digits, 40 % on
mnist1d) whose wide networks memorize the noisy labels (train accuracy → 1 while clean test
accuracy falls) next to narrower ones that cannot; runs on 10 % of digits and 25 % of mnist1d;
and every run is trained long past its best test loss. Each run is saved at five epochs spread
over training, from under-fit (epoch 1) to over-trained, as
``<out>/<run>/step=NNNNN.safetensors``; the runs on a fraction of the training set are saved
after k times as many epochs (k = batches per epoch of the whole set / of the subset: 7 and
4), i.e. after about as many optimizer steps as the full-data runs.

Label-noise and training-fraction runs train on a fixed copy of their training set, written
once per (data set, level) as ``<out>/data/<dataset>-noiseNN.npz`` (``x``: the shipped training
inputs exactly as ``load_dataset(name).x`` holds them; ``y``: the labels with a fraction
replaced by a different class drawn uniformly, seed 1234) or ``<out>/data/<dataset>-fracNN.npz``
(``x``, ``y``: the samples of ``load_dataset(name, limit=round(f * n), seed=1234)``; ``indices``:
their positions in the shipped training set); their metadata ``dataset`` is that file's path
relative to the repository root, and their train metrics are measured on that file (the noisy
labels for label-noise runs: the labels a user of the checkpoint has).

Every checkpoint carries string metadata: ``run``, ``config``, ``seed``, ``step``, ``epoch``,
``dataset``, ``test_dataset``, ``tsens.activation``, ``tsens.preprocess``, ``train_loss``,
``train_acc``, ``test_loss``, ``test_acc`` (mean cross-entropy in nats and accuracy as a fraction,
full sets, eval mode, computed in float64 from the stored float32 weights), the axes ``width``
(the hidden width: every hidden layer of a zoo network has the same width), ``depth`` (number
of hidden layers), ``lr``, ``batch_size``, ``weight_decay``, ``label_noise``,
``train_fraction``, ``optimizer``, ``batchnorm``, and the other settings (``architecture``,
``momentum``, ``bias``, ``epochs``, ``label_noise_seed``, ``train_fraction_seed``). Label-noise
runs also record ``clean_train_loss``/``clean_train_acc`` on the original labels. The script also
writes ``<out>/runs.csv`` (one line per checkpoint) and ``<out>/README.md`` (the runs and axes).

CPU only, deterministic (seeded, one torch thread per run; same bytes on every run on the same
torch build, whatever ``--jobs``); 12 to 15 CPU minutes, under eight minutes with the default two
worker processes on a two-core machine that is not busy otherwise. Run from the repository root::

    python scripts/make_zoo.py [--out DIR] [--jobs N]   # default: zoo/ at the repository root

An existing output directory is replaced only if it is empty or holds a previous zoo
(``runs.csv``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import multiprocessing
import shutil
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from training import train_epochs

from tsens.datasets import Dataset, Preprocess, load_dataset
from tsens.gap import evaluation

ROOT = Path(__file__).resolve().parent.parent
DATA_SEED = 1234  # one fixed noisy copy / subset per (data set, level)
SEEDS = (0, 1, 2)
INPUTS = {"digits": 64, "mnist1d": 40}
CLASSES = 10
# Save after these epochs; stretched to about as many steps on a training fraction (Config.epochs).
SCHEDULES = {"digits": (1, 10, 30, 100, 400), "mnist1d": (1, 5, 15, 50, 150)}
TRAIN_SIZES = {"digits": 1297, "mnist1d": 4000}  # checked against the loaded sets
# The hyper-parameter axes of the granulated τ, as metadata keys, that a configuration fixes
# (each configuration has one value on each; momentum goes with the optimizer, epoch with the step).
AXES = tuple(a for a in evaluation.AXES if a not in ("momentum", "epoch"))
CSV_COLUMNS = (
    "run",
    "config",
    "seed",
    "step",
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
)


@dataclass(frozen=True)
class Config:
    """One training configuration; trained once per seed in ``seeds``."""

    dataset: str
    hidden: tuple[int, ...]  # hidden widths (all equal in this zoo)
    seeds: tuple[int, ...] = SEEDS
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    label_noise: float = 0.0
    train_fraction: float = 1.0
    optimizer: str = "AdamW"  # AdamW (decoupled weight decay) or SGD
    momentum: float = 0.0  # SGD only
    batchnorm: bool = False
    note: str = "base"  # what varies, for the README table

    @property
    def widths(self) -> tuple[int, ...]:
        return (INPUTS[self.dataset], *self.hidden, CLASSES)

    @property
    def architecture(self) -> str:
        return "-".join(map(str, self.widths))

    @property
    def epochs(self) -> tuple[int, ...]:
        """Save after these epochs: the data set's schedule, stretched on a training fraction to
        about as many optimizer steps (batches per epoch of the whole set / of the subset)."""
        n = TRAIN_SIZES[self.dataset]
        full, part = (math.ceil(m / self.batch_size) for m in (n, round(self.train_fraction * n)))
        return tuple(e * round(full / part) for e in SCHEDULES[self.dataset])

    @property
    def preprocess(self) -> str:
        """Digits pixels are already in [0, 1]; mnist1d is z-scored with training statistics."""
        return "standard" if self.dataset == "mnist1d" else "none"

    def axes(self) -> dict[str, str]:
        """The value on each axis of :data:`AXES`, as written in the metadata."""
        return {
            "width": str(self.hidden[0]),
            "depth": str(len(self.hidden)),
            "lr": f"{self.lr:g}",
            "batch_size": str(self.batch_size),
            "weight_decay": f"{self.weight_decay:g}",
            "label_noise": f"{self.label_noise:g}",
            "train_fraction": f"{self.train_fraction:g}",
            "optimizer": self.optimizer,
            "batchnorm": str(self.batchnorm).lower(),
        }

    @property
    def name(self) -> str:
        """``<dataset>-<architecture>`` plus a tag for every setting off the defaults."""
        tags = [self.dataset, self.architecture]
        if self.optimizer != "AdamW":
            tags.append(self.optimizer.lower() + (f"-m{self.momentum:g}" if self.momentum else ""))
        if self.lr != 2e-3:
            tags.append(f"lr{self.lr:g}")
        if self.batch_size != 64:
            tags.append(f"bs{self.batch_size}")
        if self.weight_decay:
            tags.append(f"wd{self.weight_decay:g}")
        if self.label_noise:
            tags.append(f"noise{round(100 * self.label_noise):02d}")
        if self.train_fraction != 1:
            tags.append(f"frac{round(100 * self.train_fraction):02d}")
        if self.batchnorm:
            tags.append("bn")
        return "-".join(tags)


def _grid(
    base: Config,
    *,
    small: int,
    wide: int,
    depths: tuple[int, int],
    weight_decay: float,
    noise: tuple[float, ...],
    fraction: float,
) -> list[Config]:
    """The one-axis variations around ``base``; the label-noise configurations at the base width
    (which cannot memorize the noise) and at ``wide`` (which memorizes it); the training-fraction
    configurations without and with ``weight_decay``."""
    w, depth = base.hidden[0], len(base.hidden)

    def at(width: int, d: int = depth) -> tuple[int, ...]:
        return (width,) * d

    def v(note: str, **changes: object) -> Config:
        return replace(base, note=note, **changes)  # type: ignore[arg-type]

    percent = f"{100 * fraction:g}% of the training set"
    return [
        base,
        v(f"width {small}", hidden=at(small)),
        v(f"width {wide} (wide)", hidden=at(wide)),
        *(v(f"depth {d}", hidden=at(w, d)) for d in depths),
        v("learning rate 0.01", lr=1e-2),
        v("batch size 256", batch_size=256),
        v(f"weight decay {weight_decay:g}", weight_decay=weight_decay),
        v("SGD, momentum 0.9, lr 0.01 (vs AdamW at lr 0.01)", optimizer="SGD", momentum=0.9, lr=1e-2),
        v("BatchNorm1d after each hidden Linear", batchnorm=True),
        *(
            config
            for level in noise
            for config in (
                v(f"{100 * level:g}% label noise (cannot memorize it)", label_noise=level),
                v(
                    f"{100 * level:g}% label noise, width {wide} (memorizes it)",
                    label_noise=level,
                    hidden=at(wide),
                ),
            )
        ),
        v(percent, train_fraction=fraction),
        v(f"{percent}, weight decay {weight_decay:g}", train_fraction=fraction, weight_decay=weight_decay),
    ]


CONFIGS = (
    # digits: 64 inputs, 1,297 training samples; base 64-32-10
    *_grid(
        Config("digits", (32,)),
        small=16,
        wide=128,
        depths=(2, 3),
        weight_decay=1.0,
        noise=(0.2, 0.4),
        fraction=0.1,
    ),
    # mnist1d: 40 inputs, 4,000 training samples; base 40-32-32-10. MLPs overfit it strongly. One
    # noise level only: each noisy copy of the training set holds its 4,000 × 40 float32 inputs.
    *_grid(
        Config("mnist1d", (32, 32)),
        small=16,
        wide=96,
        depths=(1, 3),
        weight_decay=0.3,
        noise=(0.4,),
        fraction=0.25,
    ),
)


def axis_groups(configs: tuple[Config, ...] = CONFIGS) -> dict[str, list[list[Config]]]:
    """For each axis, the groups of (two or more) configurations that differ along it only."""
    groups: dict[str, list[list[Config]]] = {}
    for axis in AXES:
        by_rest: dict[tuple, list[Config]] = defaultdict(list)
        for c in configs:
            rest = tuple(v for k, v in c.axes().items() if k != axis)
            momentum = () if axis == "optimizer" else (c.momentum,)  # it goes with the optimizer
            by_rest[(c.dataset, *momentum, *rest)].append(c)
        groups[axis] = [g for g in by_rest.values() if len(g) > 1]
    return groups


def build(config: Config) -> torch.nn.Sequential:
    """Linear (+ BatchNorm1d) + ReLU blocks and a Linear head, so keys are ``0.weight``, ..."""
    modules: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(config.widths[:-1], config.widths[1:], strict=True)):
        modules.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(config.widths) - 2:
            if config.batchnorm:
                modules.append(torch.nn.BatchNorm1d(fan_out))
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def tensors(ds: Dataset, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole preprocessed data set as one batch and its labels."""
    ((x, y),) = ds.batches(len(ds), dtype=dtype)
    assert y is not None
    return x, y


def noisy_labels(y: np.ndarray, fraction: float, classes: int, seed: int) -> np.ndarray:
    """Replace a random ``fraction`` of labels by a different class drawn uniformly."""
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, classes, size=len(flip))) % classes
    return noisy


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed ``.npz`` with fixed zip timestamps, so regenerating gives the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def write_safetensors(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``safetensors.torch.save`` with the JSON header's keys sorted: the library writes the
    metadata in hash-map order, which changes from run to run, so the bytes would too."""
    data = save(state, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # keep the tensor data 8-byte aligned, as the library does
    path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + n :])


def spec_for(path: Path) -> str:
    """A data file's path as written in metadata: relative to the repository root if inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path.resolve())


def data_file(config: Config, out: Path) -> Path | None:
    """The training-set copy of a label-noise or training-fraction run (None: the shipped set)."""
    if config.label_noise and config.train_fraction != 1:
        raise ValueError(f"{config.name}: label noise on a training fraction is not supported")
    if config.label_noise:
        return out / "data" / f"{config.dataset}-noise{round(100 * config.label_noise):02d}.npz"
    if config.train_fraction != 1:
        return out / "data" / f"{config.dataset}-frac{round(100 * config.train_fraction):02d}.npz"
    return None


def write_data_file(config: Config, out: Path) -> None:
    """Write the config's training-set copy once (before any worker reads it)."""
    path = data_file(config, out)
    if path is None or path.exists():
        return
    clean = load_dataset(config.dataset)
    assert clean.y is not None and len(clean) == TRAIN_SIZES[config.dataset]
    if config.label_noise:
        arrays = {"x": clean.x, "y": noisy_labels(clean.y, config.label_noise, CLASSES, DATA_SEED)}
    else:
        sub = load_dataset(config.dataset, limit=round(config.train_fraction * len(clean)), seed=DATA_SEED)
        arrays = {"x": sub.x, "y": sub.y, "indices": sub.indices}  # type: ignore[dict-item]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, arrays)


def training_set(config: Config, out: Path) -> tuple[str, Dataset]:
    """The training set's spec (as written in metadata) and the preprocessed data set."""
    path = data_file(config, out)
    spec = config.dataset if path is None else spec_for(path)
    return spec, load_dataset(
        config.dataset if path is None else str(path), preprocess=Preprocess(config.preprocess)
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy in eval mode, in float64 (of the float32 weights)."""
    exact = copy.deepcopy(model).double().eval()
    logits = exact(x)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).double().mean().item()
    return loss, acc


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "AdamW":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "SGD":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def train(config: Config, seed: int, out: Path) -> list[dict[str, str]]:
    """Train one run, saving at the config's epochs; returns the metadata of every checkpoint."""
    run = f"{config.name}-s{seed}"
    train_spec, train_set = training_set(config, out)
    preprocess = train_set.preprocess  # ``standard`` now carries the training set's mean/std
    test_set = load_dataset(f"{config.dataset}-test", preprocess=preprocess)
    x_train, y_train = tensors(train_set)
    x_train64, _ = tensors(train_set, torch.float64)
    x_test64, y_test = tensors(test_set, torch.float64)
    clean_y = None
    if config.label_noise:
        clean_y = torch.from_numpy(load_dataset(config.dataset).y)  # type: ignore[arg-type]

    torch.manual_seed(seed)
    model = build(config)
    optimizer = make_optimizer(config, model)
    generator = torch.Generator().manual_seed(seed)
    settings = {
        "run": run,
        "config": config.name,
        "seed": str(seed),
        "dataset": train_spec,
        "test_dataset": f"{config.dataset}-test",
        "tsens.activation": "relu",
        "tsens.preprocess": preprocess.to_json(),
        **config.axes(),
        "architecture": config.architecture,
        "momentum": f"{config.momentum:g}",
        "label_noise_seed": str(DATA_SEED) if config.label_noise else "",
        "train_fraction_seed": str(DATA_SEED) if config.train_fraction != 1 else "",
        "bias": "true",
        "epochs": str(max(config.epochs)),
    }
    (out / run).mkdir(parents=True)
    saved = []
    data = (x_train, y_train)
    for epoch, step in train_epochs(model, optimizer, data, config.batch_size, generator, config.epochs):
        train_loss, train_acc = evaluate(model, x_train64, y_train)
        test_loss, test_acc = evaluate(model, x_test64, y_test)
        metadata = {
            **settings,
            "step": str(step),
            "epoch": str(epoch),
            "train_loss": f"{train_loss:.8f}",
            "train_acc": f"{train_acc:.8f}",
            "test_loss": f"{test_loss:.8f}",
            "test_acc": f"{test_acc:.8f}",
        }
        if clean_y is not None:
            clean_loss, clean_acc = evaluate(model, x_train64, clean_y)
            metadata["clean_train_loss"] = f"{clean_loss:.8f}"
            metadata["clean_train_acc"] = f"{clean_acc:.8f}"
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        write_safetensors(out / run / f"step={step:05d}.safetensors", state, metadata)
        saved.append(metadata)
    return saved


def _cost(config: Config) -> float:
    """Rough training time, to start the longest runs first (only the wall time depends on it)."""
    n = TRAIN_SIZES[config.dataset] * config.train_fraction
    steps = max(config.epochs) * math.ceil(n / config.batch_size)
    modules = len(config.hidden) * (3 if config.batchnorm else 2) + 1
    return steps * modules * (1 + sum(config.widths[1:-1]) * config.batch_size / 20000)


def _init_worker() -> None:
    # One thread: the matrices are tiny, and the runs are spread over processes instead.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def _job(job: tuple[int, Config, int, Path]) -> tuple[int, list[dict[str, str]], float]:
    index, config, seed, out = job
    start = time.process_time()
    saved = train(config, seed, out)
    return index, saved, time.process_time() - start


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _order(value: str) -> tuple[float, str]:
    """Axis values in numeric order (``false`` < ``true``, ``AdamW`` < ``SGD``)."""
    try:
        return float(value), value
    except ValueError:
        return 0.0, value


def readme(rows: list[dict[str, str]], configs: dict[str, Config]) -> str:
    final: dict[str, dict[str, str]] = {}
    for meta in rows:
        final[meta["run"]] = meta  # last checkpoint of each run
    by_config: dict[str, list[dict[str, str]]] = defaultdict(list)
    for meta in final.values():
        by_config[meta["config"]].append(meta)
    # each shipped set, then the copies made from it
    datasets = sorted({m["dataset"] for m in rows}, key=lambda d: (Path(d).name.split("-")[0], "/" in d, d))
    lines = [
        "# Development zoo",
        "",
        "A population of small ReLU MLPs with varied generalization, for building and testing the",
        'generalization estimators of `tsens estimate-gap`, with the cases where "test = train" and',
        "other simple estimators fail: networks that memorize noisy labels, networks trained on a",
        "small fraction of the training set, and every run trained long past its best test loss.",
        "Made by `scripts/make_zoo.py` (`python scripts/make_zoo.py`; CPU, one torch thread per run,",
        "two worker processes, seeded and deterministic, under eight minutes on two cores); do",
        "not edit by hand.",
        "",
        f"{len(final)} runs of {len(by_config)} configurations (three seeds each), {len(rows)} checkpoints.",
        "Each run `<run>/` holds five checkpoints `step=NNNNN.safetensors` saved after the epochs",
        "listed below, from under-fit to over-trained; `runs.csv` has one line per checkpoint. Runs",
        "whose names differ only in the final `-sN` are siblings: same configuration (`config`),",
        "different seed (initialization and batch order). Run names are",
        "`<dataset>-<architecture>-<tags>-s<seed>`, with a tag for every setting off the base",
        "(`sgd-m0.9`, `lr…`, `bs…`, `wd…`, `noiseNN`, `fracNN`, `bn`).",
        "",
        "## Configurations",
        "",
        "Train and test accuracy after the last epoch, min–max over the three seeds. Train accuracy",
        "is on the labels the run was trained with (the noisy ones for label-noise runs); test",
        "accuracy on the clean test set.",
        "",
    ]
    table = []
    for name, metas in by_config.items():
        c = configs[name]
        tr = [float(m["train_acc"]) for m in metas]
        te = [float(m["test_acc"]) for m in metas]
        table.append(
            [
                f"`{name}`",
                metas[0]["dataset"],
                c.axes()["width"],
                c.axes()["depth"],
                c.note,
                ", ".join(map(str, c.epochs)),
                f"{min(tr):.3f}–{max(tr):.3f}",
                f"{min(te):.3f}–{max(te):.3f}",
            ]
        )
    header = [
        "config",
        "data set",
        "width",
        "depth",
        "what varies",
        "saved after epochs",
        "train acc",
        "test acc",
    ]
    lines += _table(header, table)
    lines += [
        "",
        "Runs per training set (metadata `dataset`; `scripts/evaluate_zoo.py` evaluates each as one",
        "group):",
        "",
    ]
    per_set = []
    for d in datasets:
        members = [name for name, metas in by_config.items() if metas[0]["dataset"] == d]
        runs = sum(len(by_config[name]) for name in members)
        per_set.append([f"`{d}`", str(runs), str(sum(m["dataset"] == d for m in rows)), str(len(members))])
    lines += _table(["training set", "runs", "checkpoints", "configurations"], per_set)
    lines += [
        "",
        "## Hyper-parameter axes",
        "",
        "Every checkpoint records its value on each axis as metadata (strings): `width` (the hidden",
        "width; all hidden layers of a zoo network have the same width, so the architecture is",
        "`<inputs>-<width>×depth-10`), `depth` (number of hidden layers), `lr`, `batch_size`,",
        "`weight_decay`, `label_noise` (fraction of wrong training labels), `train_fraction`",
        "(fraction of the shipped training set trained on), `optimizer` (`AdamW`, or `SGD` with",
        "`momentum` 0.9: the momentum goes with the optimizer) and `batchnorm`. The groups of",
        "configurations that differ along one axis only, for Jiang et al. 2020's granulated Kendall",
        "τ (the other axes as in the base configuration of each data set unless listed; checkpoints",
        "pair up by their position in the run, e.g. the last one, or by `epoch`, except along",
        "`train_fraction`, whose runs save after more epochs, at about the same `step`):",
        "",
    ]
    bases = {c.dataset: c for c in configs.values() if c.note == "base"}
    axis_rows = []
    for axis, groups in axis_groups(tuple(configs.values())).items():
        for group in groups:
            values = group[0].axes()
            base = bases[group[0].dataset].axes()
            off = [f"{k} {v}" for k, v in values.items() if k != axis and v != base[k]]
            if axis != "optimizer" and group[0].optimizer != "AdamW":
                off.append(f"momentum {group[0].momentum:g}")
            axis_rows.append(
                [
                    f"`{axis}`",
                    group[0].dataset,
                    ", ".join(sorted((c.axes()[axis] for c in group), key=_order)),
                    ", ".join(off) or "base",
                ]
            )
    lines += _table(["axis", "data set", "values", "other axes off the base"], axis_rows)
    lines += [
        "",
        "## Training and metadata",
        "",
        "Training: cross-entropy, AdamW (decoupled `weight_decay`) unless the run says SGD, learning",
        "rate 0.002 and batch size 64 unless the name says otherwise. Models are `nn.Sequential`",
        "with biases (keys `0.weight`, `0.bias`, `2.weight`, ...; the `-bn` runs have BatchNorm1d",
        "after each hidden Linear, keys `1.weight`, `1.running_mean`, ...), stored in float32.",
        "Digits inputs are the shipped pixels scaled into [0, 1]; mnist1d inputs are z-scored with",
        "the training set's scalar mean and std (of the subset, for the `fracNN` runs).",
        "",
        "Metadata (all strings, safetensors `__metadata__`): `run` (unique), `config` (the run name",
        "without the seed; siblings share it), `seed`, `step` (optimizer steps so far), `epoch`,",
        "`dataset` (the training set: `digits`, `mnist1d`, or a copy under `zoo/data/`, path",
        "relative to the repository root: `<dataset>-noiseNN.npz` for label-noise runs, whose `x`",
        "is the shipped training inputs as `load_dataset` returns them and `y` the labels with NN %",
        "replaced by a different class drawn uniformly; `<dataset>-fracNN.npz` for training-fraction",
        "runs, whose `x`, `y` are the NN % of the shipped training set that",
        "`load_dataset(<dataset>, limit=round(NN % × n), seed=1234)` draws and `indices` their",
        "positions in it), `test_dataset` (`digits-test` / `mnist1d-test`, clean labels),",
        "`tsens.activation` (`relu`), `tsens.preprocess` (the JSON of `tsens.datasets.Preprocess`:",
        "none for digits, `standard` with the training mean/std written out for mnist1d),",
        "`train_loss`, `train_acc`, `test_loss`, `test_acc` (mean cross-entropy in nats and accuracy",
        "as a fraction, on the full sets in eval mode, computed in float64 from the stored weights;",
        "train metrics on the training set the run was trained with, i.e. the noisy labels for",
        "label-noise runs, which also record `clean_train_loss`/`clean_train_acc` on the original",
        "labels, and the subset for training-fraction runs), the axes `width`, `depth`, `lr`,",
        "`batch_size`, `weight_decay`, `label_noise`, `train_fraction`, `optimizer`, `batchnorm`",
        "(above), and `architecture`, `momentum`, `bias`, `epochs` (length of the run),",
        "`label_noise_seed` and `train_fraction_seed` (1234 where used, else empty).",
        "",
        "Data: scikit-learn digits (UCI, CC BY 4.0) and MNIST-1D (Apache-2.0); see",
        "`tsens/data/LICENSES.txt`.",
        "",
    ]
    return "\n".join(lines)


def prepare(out: Path) -> None:
    if out.exists():
        if any(out.iterdir()) and not (out / "runs.csv").exists():
            raise SystemExit(f"{out} is not empty and holds no previous zoo (runs.csv); not touching it")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "zoo", help="output directory (default: zoo/)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes (default 2); same bytes for any"
    )
    args = parser.parse_args()
    _init_worker()
    out: Path = args.out
    names = [c.name for c in CONFIGS]
    assert len(set(names)) == len(names), "duplicate config names"
    assert all(len(c.seeds) >= 3 for c in CONFIGS), "every configuration needs three seeds"
    assert all(len(g) >= 2 for g in axis_groups().values()), "an axis with fewer than two groups"
    configs = dict(zip(names, CONFIGS, strict=True))
    prepare(out)
    for config in CONFIGS:
        write_data_file(config, out)  # before the workers start: they only read them
    jobs = [(config, seed) for config in CONFIGS for seed in config.seeds]
    order = sorted(range(len(jobs)), key=lambda i: -_cost(jobs[i][0]))  # longest first
    results: dict[int, list[dict[str, str]]] = {}
    cpu = 0.0
    start = time.perf_counter()
    tasks = [(i, *jobs[i], out) for i in order]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(1, args.jobs), initializer=_init_worker) as pool:
        for index, saved, seconds in pool.imap_unordered(_job, tasks):
            results[index] = saved
            cpu += seconds
            last = saved[-1]
            print(
                f"{len(results):3d}/{len(jobs)} {last['run']:40s} {time.perf_counter() - start:5.0f}s "
                f"(cpu {seconds:4.1f}s) "
                f"epoch {int(last['epoch']):4d} train loss {float(last['train_loss']):.3f} "
                f"acc {float(last['train_acc']):.3f}  test loss {float(last['test_loss']):.3f} "
                f"acc {float(last['test_acc']):.3f}",
                flush=True,
            )
    rows = [meta for i in range(len(jobs)) for meta in results[i]]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows([meta[c] for c in CSV_COLUMNS] for meta in rows)
    (out / "README.md").write_text(readme(rows, configs))
    print(
        f"{len(results)} runs, {len(rows)} checkpoints in {out} ({time.perf_counter() - start:.0f}s, "
        f"{cpu:.0f} CPU seconds of training in {args.jobs} processes)"
    )


if __name__ == "__main__":
    main()
