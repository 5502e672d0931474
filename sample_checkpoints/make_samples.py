"""Train the sample checkpoint zoo on the shipped data sets (the only training code in tsens).

Small ReLU MLPs on ``digits`` and ``mnist1d`` (loaded through :func:`tsens.datasets.load_dataset`)
varying depth, width, weight decay, label noise, biases and BatchNorm, each saved at several
epochs as ``<run>/epoch=NN.safetensors`` (one run as a Lightning-style ``epoch=NN.pt``). Every
checkpoint carries string metadata: ``epoch``, ``step``, ``run``, ``dataset``, ``test_dataset``,
``tsens.activation``, ``tsens.preprocess`` and ``train_loss``/``train_acc``/``test_loss``/
``test_acc`` (mean cross-entropy in nats and accuracy as a fraction, measured in eval mode on
the full clean sets when the checkpoint is saved), plus the training settings.

CPU only, deterministic (seeded, one thread); about 30 seconds. Run from the repository root:
``python sample_checkpoints/make_samples.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tsens.datasets import Dataset, Preprocess, load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from training import train_epochs  # noqa: E402

OUT = Path(__file__).resolve().parent
SEED = 0


@dataclass(frozen=True)
class Run:
    """One training run of the zoo."""

    name: str
    dataset: str
    widths: tuple[int, ...]  # (d, h_1, ..., n)
    epochs: tuple[int, ...]  # save after these epochs
    weight_decay: float = 0.0
    label_noise: float = 0.0
    bias: bool = True
    batchnorm: bool = False
    lightning: bool = False
    lr: float = 2e-3
    batch_size: int = 64
    preprocess: str = "none"

    @property
    def architecture(self) -> str:
        return "-".join(map(str, self.widths))


DIGITS_EPOCHS = (2, 10, 30, 80)
MNIST1D_EPOCHS = (2, 10, 30, 60)
RUNS = (
    Run("digits-64-32-10", "digits", (64, 32, 10), DIGITS_EPOCHS),
    Run("digits-64-32-10-wd", "digits", (64, 32, 10), DIGITS_EPOCHS, weight_decay=0.5),
    Run("digits-64-64-64-10", "digits", (64, 64, 64, 10), DIGITS_EPOCHS),
    Run("digits-64-64-64-10-wd", "digits", (64, 64, 64, 10), DIGITS_EPOCHS, weight_decay=0.5),
    Run("digits-64-64-64-10-noise20", "digits", (64, 64, 64, 10), DIGITS_EPOCHS, label_noise=0.2),
    Run("digits-64-64-10-nobias", "digits", (64, 64, 10), DIGITS_EPOCHS, bias=False),
    Run("mnist1d-40-100-100-10", "mnist1d", (40, 100, 100, 10), MNIST1D_EPOCHS, preprocess="standard"),
    Run(
        "mnist1d-40-100-100-10-bn",
        "mnist1d",
        (40, 100, 100, 10),
        MNIST1D_EPOCHS,
        batchnorm=True,
        preprocess="standard",
    ),
    Run(
        "mnist1d-40-100-100-10-wd-lightning",
        "mnist1d",
        (40, 100, 100, 10),
        MNIST1D_EPOCHS,
        weight_decay=0.5,
        lightning=True,
        preprocess="standard",
    ),
)


def build(run: Run) -> torch.nn.Sequential:
    """Linear (+ BatchNorm1d) + ReLU blocks and a Linear head, so keys are ``0.weight``, ..."""
    modules: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(run.widths[:-1], run.widths[1:], strict=True)):
        modules.append(torch.nn.Linear(fan_in, fan_out, bias=run.bias))
        if i < len(run.widths) - 2:
            if run.batchnorm:
                modules.append(torch.nn.BatchNorm1d(fan_out))
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def tensors(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole preprocessed data set as one float32 batch and its labels."""
    ((x, y),) = ds.batches(len(ds))
    assert y is not None
    return x, y


def noisy_labels(y: torch.Tensor, fraction: float, classes: int, seed: int) -> torch.Tensor:
    """Replace a random ``fraction`` of labels by a different class drawn uniformly."""
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    shift = rng.integers(1, classes, size=len(flip))
    noisy = y.clone()
    noisy[flip] = (y[flip] + torch.from_numpy(shift)) % classes
    return noisy


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy, in eval mode."""
    model.eval()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).double().mean().item()
    return loss, acc


def save(run: Run, model: torch.nn.Module, epoch: int, step: int, metadata: dict[str, str]) -> Path:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if run.lightning:
        path = OUT / run.name / f"epoch={epoch:02d}.pt"
        hyper = {"widths": list(run.widths), "lr": run.lr, "batch_size": run.batch_size}
        hyper.update({k: v for k, v in metadata.items() if k not in ("epoch", "step")})
        hyper["step"] = str(step)
        checkpoint = {
            "epoch": epoch,
            "global_step": step,
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "hyper_parameters": hyper,
        }
        torch.save(checkpoint, path)
    else:
        path = OUT / run.name / f"epoch={epoch:02d}.safetensors"
        save_file(state, str(path), metadata={"epoch": str(epoch), "step": str(step), **metadata})
    return path


def train(run: Run) -> list[tuple[int, dict[str, str]]]:
    """Train one run, saving at its epochs; returns (epoch, metadata) of every checkpoint."""
    torch.manual_seed(SEED)
    train_set = load_dataset(run.dataset, preprocess=Preprocess(run.preprocess))
    preprocess = train_set.preprocess  # ``standard`` now carries the training set's mean/std
    test_set = load_dataset(f"{run.dataset}-test", preprocess=preprocess)
    x_train, y_train = tensors(train_set)
    x_test, y_test = tensors(test_set)
    classes = run.widths[-1]
    y_fit = noisy_labels(y_train, run.label_noise, classes, SEED) if run.label_noise else y_train

    model = build(run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    generator = torch.Generator().manual_seed(SEED)
    settings = {
        "run": run.name,
        "dataset": run.dataset,
        "test_dataset": f"{run.dataset}-test",
        "tsens.activation": "relu",
        "tsens.preprocess": preprocess.to_json(),
        "architecture": run.architecture,
        "bias": str(run.bias).lower(),
        "batchnorm": str(run.batchnorm).lower(),
        "optimizer": "AdamW",
        "lr": str(run.lr),
        "batch_size": str(run.batch_size),
        "weight_decay": str(run.weight_decay),
        "label_noise": str(run.label_noise),
        "seed": str(SEED),
    }
    (OUT / run.name).mkdir(parents=True)
    saved = []
    fit = (x_train, y_fit)
    for epoch, step in train_epochs(model, optimizer, fit, run.batch_size, generator, run.epochs):
        train_loss, train_acc = evaluate(model, x_train, y_train)
        test_loss, test_acc = evaluate(model, x_test, y_test)
        metadata = {
            **settings,
            "train_loss": f"{train_loss:.6f}",
            "train_acc": f"{train_acc:.6f}",
            "test_loss": f"{test_loss:.6f}",
            "test_acc": f"{test_acc:.6f}",
        }
        if run.label_noise:
            noisy_loss, noisy_acc = evaluate(model, x_train, y_fit)
            metadata["noisy_train_loss"] = f"{noisy_loss:.6f}"
            metadata["noisy_train_acc"] = f"{noisy_acc:.6f}"
        save(run, model, epoch, step, metadata)
        saved.append((epoch, metadata))
    return saved


def main() -> None:
    # One thread: the matrices are tiny, and on a busy two-core machine a second (spinning)
    # thread made the script three to four times slower.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for run in RUNS:
        if (OUT / run.name).exists():
            shutil.rmtree(OUT / run.name)
        for epoch, meta in train(run):
            print(
                f"{run.name:38s} epoch {epoch:2d}  train loss {float(meta['train_loss']):.3f} "
                f"acc {float(meta['train_acc']):.3f}  test loss {float(meta['test_loss']):.3f} "
                f"acc {float(meta['test_acc']):.3f}"
            )
    print(json.dumps({"runs": len(RUNS), "out": str(OUT)}))


if __name__ == "__main__":
    main()
