"""Write the small data sets shipped inside the package (``tsens/data/``).

Needs the ``dev`` extra (scikit-learn, mnist1d); nothing is downloaded:

- ``digits.npz``: scikit-learn's ``load_digits`` (1,797 8×8 images, pixel values 0..16 stored
  as uint8). Fixed stratified split, 1,297 train / 500 test: the indices are shuffled with
  ``numpy.random.default_rng(0).permutation``; each class gives its share of the 500 test
  samples (largest remainder rounding) from the front of its shuffled indices; both parts are
  stored in the original order. ``tsens`` scales the pixels by 1/16 into [0, 1] on loading.
- ``mnist1d.npz``: MNIST-1D from its default generator (``make_dataset(get_dataset_args())``,
  seed 42): 4,000 train / 1,000 test samples of 40 float32 features, ten classes.

Run: ``python scripts/make_datasets.py`` (from the repository root).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tsens" / "data"
DIGITS_TEST = 500
SPLIT_SEED = 0


def stratified_test_indices(y: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """Indices of a stratified test split of size ``n_test`` (sorted)."""
    order = np.random.default_rng(seed).permutation(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n_test / len(y)
    take = np.floor(quota).astype(int)
    remainder_order = np.argsort(-(quota - take), kind="stable")
    take[remainder_order[: n_test - take.sum()]] += 1
    chosen = [order[y[order] == c][:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def make_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.uint8)
    assert np.array_equal(x, digits.data) and x.max() <= 16
    y = digits.target.astype(np.int64)
    test = stratified_test_indices(y, DIGITS_TEST, SPLIT_SEED)
    train = np.setdiff1d(np.arange(len(y)), test)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def make_mnist1d() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return {
        "x_train": data["x"].astype(np.float32),
        "y_train": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, arrays in (("digits", make_digits()), ("mnist1d", make_mnist1d())):
        path = OUT / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        sizes = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items())
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB): {sizes}")


if __name__ == "__main__":
    main()
