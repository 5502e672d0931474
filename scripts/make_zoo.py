"""Train the development zoo: a varied population of small ReLU MLP checkpoints for building and
testing generalization estimators (``tsens estimate-gap``).

Runs on the shipped data sets ``digits`` and ``mnist1d`` (loaded through
:func:`tsens.datasets.load_dataset`), varying width, depth, weight decay, label noise, learning
rate, batch size, optimizer, BatchNorm and seed. Several configurations are trained with more
than one seed: sibling runs share ``config`` and differ only in ``seed`` (initialization and
batch order). Each run is saved at five epochs spread over training, from under-fit (epoch 1)
to long past the point where test loss starts to rise, as ``<out>/<run>/step=NNNNN.safetensors``.

Label-noise runs are trained on a fixed noisy copy of the training set, written once per
(data set, noise level, noise seed) as ``<out>/data/<dataset>-noiseNN.npz`` (``x``: the raw
training inputs exactly as ``load_dataset(name).x`` holds them; ``y``: the noisy labels); their
metadata ``dataset`` is that file's path relative to the repository root, and their train
metrics are measured on those noisy labels (the labels a user of the checkpoint has).

Every checkpoint carries string metadata: ``run``, ``config``, ``seed``, ``step``, ``epoch``,
``dataset``, ``test_dataset``, ``tsens.activation``, ``tsens.preprocess``, ``train_loss``,
``train_acc``, ``test_loss``, ``test_acc`` (mean cross-entropy in nats and accuracy as a fraction,
full sets, eval mode, computed in float64 from the stored float32 weights), and the training
settings (``architecture``, ``optimizer``, ``lr``, ``momentum``, ``batch_size``, ``weight_decay``,
``label_noise``, ``label_noise_seed``, ``bias``, ``batchnorm``, ``epochs``). Label-noise runs also
record ``clean_train_loss``/``clean_train_acc`` on the original labels. The script also writes
``<out>/runs.csv`` (one line per checkpoint) and ``<out>/README.md`` (a table of runs).

CPU only, one thread, deterministic (seeded; same bytes on every run on the same torch build);
a couple of minutes. Run from the repository root::

    python scripts/make_zoo.py [--out DIR]      # default: zoo/ at the repository root

An existing output directory is replaced only if it is empty or holds a previous zoo
(``runs.csv``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from training import train_epochs

from tsens.datasets import Dataset, Preprocess, load_dataset

ROOT = Path(__file__).resolve().parent.parent
NOISE_SEED = 1234  # one fixed noisy training set per (data set, noise level)
DIGITS_EPOCHS = (1, 6, 20, 50, 120)
MNIST1D_EPOCHS = (1, 5, 15, 40, 100)
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
    widths: tuple[int, ...]  # (d, h_1, ..., n)
    seeds: tuple[int, ...] = (0,)
    epochs: tuple[int, ...] = DIGITS_EPOCHS  # save after these epochs
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    label_noise: float = 0.0
    optimizer: str = "AdamW"  # AdamW (decoupled weight decay) or SGD
    momentum: float = 0.0  # SGD only
    batchnorm: bool = False
    note: str = "baseline"  # what varies, for the README table

    @property
    def architecture(self) -> str:
        return "-".join(map(str, self.widths))

    @property
    def preprocess(self) -> str:
        """Digits pixels are already in [0, 1]; mnist1d is z-scored with training statistics."""
        return "standard" if self.dataset == "mnist1d" else "none"

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
        if self.batchnorm:
            tags.append("bn")
        return "-".join(tags)


def _d(widths: tuple[int, ...], **kw: object) -> Config:
    return Config("digits", widths, **kw)  # type: ignore[arg-type]


def _m(widths: tuple[int, ...], **kw: object) -> Config:
    kw.setdefault("epochs", MNIST1D_EPOCHS)
    return Config("mnist1d", widths, **kw)  # type: ignore[arg-type]


CONFIGS = (
    # digits: 64 inputs, 1,297 training samples
    _d((64, 32, 10), seeds=(0, 1, 2)),
    _d((64, 16, 10), note="width 16"),
    _d((64, 96, 10), note="width 96"),
    _d((64, 48, 48, 10), seeds=(0, 1), note="depth 2"),
    _d((64, 24, 24, 24, 10), note="depth 3, narrow"),
    _d((64, 48, 10), weight_decay=1.0, note="weight decay 1"),
    _d((64, 48, 10), weight_decay=10.0, note="weight decay 10 (strong; under-fits)"),
    _d((64, 48, 10), label_noise=0.2, seeds=(0, 1), note="20% label noise"),
    _d((64, 48, 10), label_noise=0.5, note="50% label noise"),
    _d(
        (64, 96, 10),
        label_noise=0.35,
        lr=1e-2,
        epochs=(1, 5, 20, 60, 150),
        note="35% label noise, wide, lr 1e-2, long (memorizes the noise)",
    ),
    _d((64, 32, 10), lr=1e-4, note="learning rate 1e-4 (slow)"),
    _d((64, 32, 10), lr=3e-2, seeds=(0, 1), note="learning rate 3e-2 (large)"),
    _d((64, 32, 10), batch_size=16, epochs=(1, 3, 10, 25, 60), note="batch size 16"),
    _d((64, 32, 10), batch_size=512, note="batch size 512"),
    _d((64, 48, 10), optimizer="SGD", lr=0.05, momentum=0.9, note="SGD, momentum 0.9"),
    _d((64, 48, 10), optimizer="SGD", lr=0.01, note="plain SGD, lr 0.01 (under-fits)"),
    _d((64, 48, 48, 10), batchnorm=True, note="BatchNorm1d after hidden Linears"),
    # mnist1d: 40 inputs, 4,000 training samples; MLPs overfit it strongly
    _m((40, 64, 10), seeds=(0, 1, 2)),
    _m((40, 16, 10), note="width 16"),
    _m((40, 128, 10), note="width 128"),
    _m((40, 48, 48, 10), seeds=(0, 1), note="depth 2"),
    _m((40, 80, 80, 10), note="depth 2, wider (memorizes)"),
    _m((40, 32, 32, 32, 10), note="depth 3, narrow"),
    _m((40, 64, 10), weight_decay=1.0, seeds=(0, 1), note="weight decay 1"),
    _m((40, 64, 10), weight_decay=5.0, note="weight decay 5 (strong)"),
    _m((40, 64, 10), lr=1e-2, note="learning rate 1e-2 (large)"),
    _m((40, 64, 10), lr=3e-4, note="learning rate 3e-4 (slow)"),
    _m((40, 64, 10), batch_size=256, note="batch size 256"),
    _m((40, 48, 48, 10), batchnorm=True, note="BatchNorm1d after hidden Linears"),
)


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


def training_set(config: Config, out: Path) -> tuple[str, Dataset]:
    """The (possibly noisy) training set spec and data set, writing the noisy file once."""
    if not config.label_noise:
        return config.dataset, load_dataset(config.dataset, preprocess=Preprocess(config.preprocess))
    path = out / "data" / f"{config.dataset}-noise{round(100 * config.label_noise):02d}.npz"
    if not path.exists():
        clean = load_dataset(config.dataset)
        assert clean.y is not None
        y = noisy_labels(clean.y, config.label_noise, config.widths[-1], NOISE_SEED)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, {"x": clean.x, "y": y})
    spec = spec_for(path)
    return spec, load_dataset(str(path), preprocess=Preprocess(config.preprocess))


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
        "architecture": config.architecture,
        "optimizer": config.optimizer,
        "lr": f"{config.lr:g}",
        "momentum": f"{config.momentum:g}",
        "batch_size": str(config.batch_size),
        "weight_decay": f"{config.weight_decay:g}",
        "label_noise": f"{config.label_noise:g}",
        "label_noise_seed": str(NOISE_SEED) if config.label_noise else "",
        "bias": "true",
        "batchnorm": str(config.batchnorm).lower(),
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


def readme(rows: list[dict[str, str]], configs: dict[str, Config]) -> str:
    final: dict[str, dict[str, str]] = {}
    for meta in rows:
        final[meta["run"]] = meta  # last checkpoint of each run
    lines = [
        "# Development zoo",
        "",
        "A population of small ReLU MLPs with varied generalization, for building and testing the",
        "generalization estimators of `tsens estimate-gap`. Made by `scripts/make_zoo.py`",
        "(`python scripts/make_zoo.py`; CPU, one thread, seeded and deterministic, a few minutes);",
        "do not edit by hand. Each run `<run>/` holds five checkpoints `step=NNNNN.safetensors`",
        "saved after the epochs listed below (from under-fit to over-trained); `runs.csv` has one",
        "line per checkpoint. Runs whose names differ only in the final `-sN` are siblings: same",
        "configuration (`config`), different seed (initialization and batch order).",
        "",
        f"{len(final)} runs, {len(rows)} checkpoints. Final train accuracy is on the labels the run",
        "was trained with (the noisy ones for label-noise runs); test accuracy on the clean test set.",
        "",
        "| run | data set | architecture | what varies | saved after epochs | final train acc | "
        "final test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, meta in final.items():
        config = configs[meta["config"]]
        epochs = ", ".join(map(str, config.epochs))
        lines.append(
            f"| `{run}` | {meta['dataset']} | {config.architecture} | {config.note} | {epochs} | "
            f"{float(meta['train_acc']):.3f} | {float(meta['test_acc']):.3f} |"
        )
    lines += [
        "",
        "Training: cross-entropy, AdamW (decoupled `weight_decay`) unless the run says SGD, learning",
        "rate 0.002 and batch size 64 unless the name says otherwise (`lr…`, `bs…`, `wd…`). Models",
        "are `nn.Sequential` with biases (keys `0.weight`, `0.bias`, `2.weight`, ...; the `-bn` runs",
        "have BatchNorm1d after each hidden Linear, keys `1.weight`, `1.running_mean`, ...), stored",
        "in float32. Digits inputs are the shipped pixels scaled into [0, 1]; mnist1d inputs are",
        "z-scored with the training set's scalar mean and std.",
        "",
        "Metadata (all strings, safetensors `__metadata__`): `run` (unique), `config` (the run name",
        "without the seed; siblings share it), `seed`, `step` (optimizer steps so far), `epoch`,",
        "`dataset` (the training set: `digits`, `mnist1d`, or for label-noise runs the noisy copy",
        "`zoo/data/<dataset>-noiseNN.npz`, path relative to the repository root, whose `x` is the",
        "shipped training inputs as `load_dataset` returns them and `y` the noisy labels),",
        "`test_dataset` (`digits-test` / `mnist1d-test`, clean labels), `tsens.activation` (`relu`),",
        "`tsens.preprocess` (the JSON of `tsens.datasets.Preprocess`: none for digits, `standard`",
        "with the training mean/std written out for mnist1d), `train_loss`, `train_acc`,",
        "`test_loss`, `test_acc` (mean cross-entropy in nats and accuracy as a fraction, on the full",
        "sets in eval mode, computed in float64 from the stored weights; train metrics on the labels",
        "the run was trained with, i.e. the noisy ones for label-noise runs, which also record",
        "`clean_train_loss`/`clean_train_acc` on the original labels), and the settings",
        "`architecture`, `optimizer`, `lr`, `momentum`, `batch_size`, `weight_decay`, `label_noise`,",
        "`label_noise_seed`, `bias`, `batchnorm`, `epochs` (length of the run).",
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
    args = parser.parse_args()
    # One thread: the matrices are tiny and the machine is shared.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    prepare(out)
    names = [c.name for c in CONFIGS]
    assert len(set(names)) == len(names), "duplicate config names"
    configs = dict(zip(names, CONFIGS, strict=True))
    rows: list[dict[str, str]] = []
    start = time.perf_counter()
    for config in CONFIGS:
        for seed in config.seeds:
            saved = train(config, seed, out)
            rows += saved
            last = saved[-1]
            print(
                f"{last['run']:36s} {time.perf_counter() - start:6.1f}s  epoch {int(last['epoch']):3d} "
                f"train loss {float(last['train_loss']):.3f} acc {float(last['train_acc']):.3f}  "
                f"test loss {float(last['test_loss']):.3f} acc {float(last['test_acc']):.3f}",
                flush=True,
            )
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows([meta[c] for c in CSV_COLUMNS] for meta in rows)
    (out / "README.md").write_text(readme(rows, configs))
    runs = len({meta["run"] for meta in rows})
    print(f"{runs} runs, {len(rows)} checkpoints in {out} ({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
