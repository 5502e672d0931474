"""Lightning checkpoints written by the real package, for ``tests/test_lightning.py`` (dev-only).

Run once in a separate environment per Lightning generation; the outputs are committed under
``tests/data/formats/lightning/``:

    python3 -m venv /tmp/genlight && /tmp/genlight/bin/pip install torch==2.13.0 lightning
    /tmp/genlight/bin/python scripts/checkpoint_formats/make_lightning.py

    python3 -m venv /tmp/genpl1 && /tmp/genpl1/bin/pip install torch==2.13.0 \
        "pytorch_lightning==1.9.5" "setuptools<70"
    /tmp/genpl1/bin/python scripts/checkpoint_formats/make_lightning.py

Each run trains a small float64 MLP for two epochs on random data with ``Trainer.fit`` (Adam, a
StepLR scheduler, ModelCheckpoint and EarlyStopping callbacks, hyper-parameters saved from a
dict and an ``argparse.Namespace``) and keeps the last checkpoint, as
``<generation>.ckpt``. With pytorch_lightning 1.x it also writes the layout of older releases,
which pickled the hyper-parameters as Lightning's ``AttributeDict`` and keyed callback states by
the callback's class (``<generation>-attributedict.ckpt``, made from the same checkpoint with
the package's own classes). ``<name>.npz`` holds float64 inputs ``x`` and the module's outputs
``y`` on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    import lightning.pytorch as pl

    GENERATION = "lightning2"
except ImportError:
    import pytorch_lightning as pl

    GENERATION = f"pl{pl.__version__.split('.')[0]}"

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "formats" / "lightning"


class Classifier(pl.LightningModule):
    def __init__(self, hparams_ns: argparse.Namespace | None = None, widths: tuple[int, ...] = (5, 8, 7, 3)):
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers += [nn.BatchNorm1d(widths[i + 1]), nn.ReLU()]
        self.model = nn.Sequential(*layers).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.Adam(self.parameters(), lr=0.05)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1)]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    ns = argparse.Namespace(lr=0.05, width=8, activation="relu")
    model = Classifier(ns)
    work = Path("/tmp") / f"tsens-{GENERATION}"
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=str(work),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=str(work), save_last=True),
            pl.callbacks.EarlyStopping(monitor="train_loss", patience=3),
        ],
    )
    trainer.fit(model, loader)
    ckpt = torch.load(work / "last.ckpt", map_location="cpu", weights_only=False)
    name = GENERATION
    torch.save(ckpt, OUT / f"{name}.ckpt")
    probe = torch.randn(11, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model.eval()
        out = model(probe)
    np.savez(OUT / f"{name}.npz", x=probe.numpy(), y=out.numpy())
    if GENERATION == "pl1":
        from pytorch_lightning.utilities.parsing import AttributeDict

        old = dict(ckpt)
        old["hyper_parameters"] = AttributeDict(ckpt["hyper_parameters"])
        classes = {type(cb).__name__: type(cb) for cb in trainer.callbacks}
        old["callbacks"] = {
            classes.get(key.split("{")[0], key): state for key, state in ckpt["callbacks"].items()
        }
        torch.save(old, OUT / f"{name}-attributedict.ckpt")
        torch.save(old, OUT / f"{name}-attributedict-legacy.ckpt", _use_new_zipfile_serialization=False)
        np.savez(OUT / f"{name}-attributedict.npz", x=probe.numpy(), y=out.numpy())
        np.savez(OUT / f"{name}-attributedict-legacy.npz", x=probe.numpy(), y=out.numpy())
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
