"""Arrow table columns as NumPy inputs and labels, for every table format (:mod:`.tables`).

Labels come from a column ``label``/``labels``/``y``/``target``/``fine_label``; the inputs are
the other columns: numeric feature columns (stacked), or one (possibly nested) list column of
equal-length rows, or one Hugging Face image column (``{bytes, path}`` structs, decoded with
Pillow into ``C × H × W`` uint8; Pillow is optional). Missing values, ragged lists and
undecodable images are refused naming the file and the column.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import TsensError
from .common import Arrays

LABEL_COLUMNS = ("label", "labels", "y", "target", "fine_label")


def _not_numeric(path: Path, bad: list[str]) -> TsensError:
    return TsensError(
        f"{path}: columns {bad} are not numeric; expected numeric feature columns, one list column "
        f"or one image column, plus an optional label column ({'/'.join(LABEL_COLUMNS)})"
    )


class Columns:
    """Which columns of an Arrow table hold the inputs and the labels (:func:`table_arrays`'s
    rules, checked on the schema), and the decoding of the inputs of one piece of the table,
    checked there (missing values, ragged lists, images) and against the first piece's sample
    shape."""

    def __init__(self, schema: pa.Schema, path: Path) -> None:
        self.path = path
        names = schema.names
        self.label = next((c for c in LABEL_COLUMNS if c in names), None)
        self.features = [c for c in names if c != self.label]
        if not self.features:
            raise TsensError(f"{path}: no feature columns besides the label column {self.label!r}")
        kind = schema.field(self.features[0]).type
        if len(self.features) == 1 and is_list(kind):
            self.kind = "list"
        elif len(self.features) == 1 and is_image(kind):
            self.kind = "image"
        else:
            self.kind = "columns"
            bad = [c for c in self.features if not numeric_arrow(schema.field(c).type)]
            if bad:
                raise _not_numeric(path, bad)
        self.indices = [names.index(c) for c in self.features]
        self.label_index = None if self.label is None else names.index(self.label)
        self.sample_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def labels(self, table: pa.Table) -> np.ndarray:
        """The label column of ``table`` (checked for missing values) as a NumPy array."""
        column = table.column(self.label)
        if column.null_count:
            raise TsensError(f"{self.path}: column {self.label!r} has missing values")
        return column.to_numpy()

    def decode(self, table: pa.Table) -> np.ndarray:
        """The inputs of ``table`` (a piece holding the feature columns) as an array."""
        path, name = self.path, self.features[0]
        for c in self.features:
            if table.column(c).null_count:
                raise TsensError(f"{path}: column {c!r} has missing values")
        if self.kind == "list":
            x = list_column(table.column(name).combine_chunks(), name, path)
        elif self.kind == "image":
            x = image_column(table.column(name).combine_chunks(), name, path)
        else:
            x = np.column_stack([table.column(c).to_numpy() for c in self.features])
        shape = tuple(int(s) for s in x.shape[1:])
        if self.sample_shape is None:
            self.sample_shape, self.dtype = shape, x.dtype
        elif shape != self.sample_shape:
            if self.kind == "image":
                raise TsensError(
                    f"{path}: images in column {name!r} differ in size ({self.sample_shape} vs {shape})"
                )
            level = next(i for i, (a, b) in enumerate(zip(self.sample_shape, shape, strict=False)) if a != b)
            lengths = sorted({self.sample_shape[level], shape[level]})
            raise TsensError(f"{path}: list column {name!r} has rows of different lengths {lengths}")
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def row_bytes(self) -> int:
        assert self.sample_shape is not None and self.dtype is not None
        return self.dtype.itemsize * math.prod(self.sample_shape)


def table_arrays(table: pa.Table, path: Path) -> Arrays:
    """Inputs and labels from a whole Arrow table (feature columns, a list column or an image
    column)."""
    label = next((c for c in LABEL_COLUMNS if c in table.column_names), None)
    features = [c for c in table.column_names if c != label]
    if not features:
        raise TsensError(f"{path}: no feature columns besides the label column {label!r}")
    for name in [*features, *([label] if label else [])]:
        if table.column(name).null_count:
            raise TsensError(f"{path}: column {name!r} has missing values")
    y = None if label is None else table.column(label).to_numpy()
    first = table.column(features[0]).combine_chunks()
    kind = first.type
    if len(features) == 1 and is_list(kind):
        return list_column(first, features[0], path), y
    if len(features) == 1 and is_image(kind):
        return image_column(first, features[0], path), y
    bad = [c for c in features if not numeric_arrow(table.column(c).type)]
    if bad:
        raise _not_numeric(path, bad)
    return np.column_stack([table.column(c).to_numpy() for c in features]), y


def numeric_arrow(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def is_image(kind: pa.DataType) -> bool:
    """A Hugging Face image column: structs of ``bytes`` and ``path``."""
    return pa.types.is_struct(kind) and {"bytes", "path"} <= {f.name for f in kind}


def is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def list_column(arr: pa.Array, name: str, path: Path) -> np.ndarray:
    """A (possibly nested) list column of equal-length rows as an N × ... array."""
    n = len(arr)
    inner = arr.type
    while is_list(inner):  # checked on the type first: pyarrow cannot flatten to every value type
        inner = inner.value_type
    if not numeric_arrow(inner):
        raise TsensError(
            f"{path}: list column {name!r} must hold numbers without missing values, got {inner}"
        )
    shape: list[int] = []
    while is_list(arr.type):
        lengths = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lengths) != 1:
            raise TsensError(
                f"{path}: list column {name!r} has rows of different lengths {lengths[:5].tolist()}"
            )
        shape.append(int(lengths[0]))
        arr = arr.flatten()
    if not numeric_arrow(arr.type) or arr.null_count:
        raise TsensError(
            f"{path}: list column {name!r} must hold numbers without missing values, got {arr.type}"
        )
    return arr.to_numpy(zero_copy_only=False).reshape(n, *shape)


def image_column(arr: pa.StructArray, name: str, path: Path) -> np.ndarray:
    """Decode a Hugging Face image column ({bytes, path} structs) into N × C × H × W uint8."""
    try:
        from PIL import Image
    except ImportError:
        raise TsensError(
            f"{path}: column {name!r} holds encoded images; decoding them needs Pillow: pip install pillow"
        ) from None
    images = []
    for i, (data, ref) in enumerate(
        zip(arr.field("bytes").to_pylist(), arr.field("path").to_pylist(), strict=True)
    ):
        try:
            if data is not None:
                img = Image.open(io.BytesIO(data))
            elif ref is not None:
                img = Image.open(Path(ref) if Path(ref).is_absolute() else path.parent / ref)
            else:
                raise TsensError(f"{path}: image {i} in column {name!r} has neither bytes nor path")
            img.load()
        except TsensError:
            raise
        except Exception as exc:  # PIL raises many types for bad images
            raise TsensError(f"{path}: cannot decode image {i} in column {name!r} ({exc})") from None
        if img.mode not in ("L", "RGB"):
            img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
        pixels = np.asarray(img)
        images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
        if images[-1].shape != images[0].shape:
            raise TsensError(
                f"{path}: images in column {name!r} differ in size ({images[0].shape} vs {images[-1].shape})"
            )
    return np.stack(images)
