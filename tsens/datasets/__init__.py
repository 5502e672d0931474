"""Data sets: finding, loading, subsampling and preprocessing inputs.

A data set spec is either a name or a path (:func:`load_dataset`).

Names (case-insensitive, ``_`` = ``-``; :mod:`.named`): ``digits``, ``digits-test``,
``mnist1d``, ``mnist1d-test`` ship inside the package (``tsens/data/``, see
``scripts/make_datasets.py``); ``cifar``/``cifar10``, ``cifar-test``/``cifar10-test``,
``cifar100``, ``cifar100-test``, ``mnist``, ``mnist-test``, ``fashion-mnist``,
``fashion-mnist-test`` are looked up under the ``data_root`` argument, then ``$TSENS_DATA``, then
``~/.cache/tsens``, in torchvision's layouts (``cifar-10-batches-py/``, ``cifar-100-python/``,
``MNIST/raw/``, ``FashionMNIST/raw/``, IDX files with or without ``.gz``) or with the files
directly in the root. Nothing is ever downloaded. A file that happens to be called like a name is
read as ``./mnist``.

Files (:mod:`.formats`, a reader per suffix; files without a known suffix are recognised by
their content): ``.npz`` (inputs ``x``/``X``/``data``, labels ``y``/``Y``/``labels``/``targets``),
``.npy`` (inputs only, memory-mapped, ``allow_pickle=False``), ``.parquet``/``.arrow``/
``.feather`` (numeric feature columns, or one list column, or one Hugging Face image column
``{bytes, path}`` decoded with Pillow; labels from a column ``label``/``labels``/``y``/
``target``/``fine_label``), ``.safetensors`` (tensors ``x`` and optional ``y``), CIFAR python
batch files (pickles read by an unpickler that refuses every global except numpy's array
reconstruction) and MNIST IDX files (``*-images-idx3-ubyte[.gz]``, labels from the sibling
``*-labels-idx1-ubyte[.gz]``).

Data larger than memory (:mod:`.lazy`): the inputs of ``.npy``, IDX (plain or gzipped),
Parquet, Arrow/Feather, ``.safetensors``, large ``.npz`` members and named CIFAR sets of several
batch files stay in their files as a :class:`~.lazy.LazyArray` (labels are read whole); batches,
subsamples, the NaN check and the ``standard`` statistics read them a chunk at a time, so memory
beyond the per-sample results is about one batch (and one decoded row group or batch file).

A :class:`Dataset` (:mod:`.dataset`) keeps its samples in their stored dtype and shape (images
channels-first, ``C × H × W``; an ``N × H × W`` array is read as one channel); the shipped digits
(pixel values 0..16) are scaled by 1/16 into [0, 1] on loading. ``limit`` draws a seeded
subsample (a limit larger than the set uses all of it, with a :class:`~tsens.errors.Note`);
``Dataset.indices`` holds each sample's index in the original set.

Preprocessing (:mod:`.preprocess`) has one implementation, :meth:`Preprocess.apply`, used by
:meth:`Dataset.batches`, :meth:`Dataset.input` (one sample) and :meth:`Dataset.transform` (raw
samples made by the caller, e.g. translated images). In this order:

1. centre crop to ``crop × crop`` (images only; the offsets of torchvision's ``CenterCrop``);
2. flatten (``C, H, W`` order);
3. uint8 values are divided by 255 into [0, 1] (other dtypes are used as stored);
4. normalize: ``cifar10`` = per-channel mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435,
   0.2616); ``mnist`` = 0.1307 / 0.3081; explicit ``mean``/``std`` (one value, or one per channel
   of channels-first images) are applied whatever ``normalize`` says; ``standard`` without them
   z-scores with the scalar mean and std of the whole (limited) data set, computed once through
   steps 1–3, a chunk at a time in one pass (float64, Chan et al.'s pairwise update). Those
   statistics differ between a training and a test set, so the test set is then not transformed
   like the training set: a checkpoint's ``tsens.preprocess`` metadata should carry the training
   mean/std explicitly (and wins over the caller's, see :func:`resolve_preprocess`). The
   statistics used are stored in ``Dataset.preprocess``.

No normalization is ever guessed: the default is none. Error messages name the library's
parameters in backticks (``crop``, ``limit``, ...), see :mod:`tsens.errors`.
"""

from __future__ import annotations

from .dataset import Dataset, load_dataset
from .formats import FILE_FORMATS, READERS, read_file
from .lazy import LazyArray
from .named import NAMED, SHIPPED, available_datasets
from .preprocess import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    NORMALIZATIONS,
    PREPROCESS_KEY,
    Preprocess,
    resolve_preprocess,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "FILE_FORMATS",
    "MNIST_MEAN",
    "MNIST_STD",
    "NAMED",
    "NORMALIZATIONS",
    "PREPROCESS_KEY",
    "READERS",
    "SHIPPED",
    "Dataset",
    "LazyArray",
    "Preprocess",
    "available_datasets",
    "load_dataset",
    "read_file",
    "resolve_preprocess",
]
