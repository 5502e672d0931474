"""The seeds the fuzzer writes itself, byte for byte the same on every run: networks as
safetensors, zip and legacy ``torch.save`` files, Lightning ``.ckpt`` dicts and Hugging Face
directories; the payload seeds; data as .npz, .npy, safetensors, Parquet, Arrow, Feather,
IDX (plain, gzip and a gzip bomb) and CIFAR batches."""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import pickle

import numpy as np
import torch

from .encoding import (
    FEATURES,
    data_arrays,
    gzip_bytes,
    idx_bytes,
    net_state,
    npy_bytes,
    npz_bytes,
    one_storage,
    safetensors_bytes,
    torch_bytes,
)
from .payloads import payload_seeds
from .seeds import CHECKPOINT, DATA, Seed


def _bomb_bytes(head: bytes, total: int = 1 << 30) -> bytes:
    """A multi-member gzip stream: ``head`` then zeros, ``total`` bytes once inflated (~1/1000)."""
    block = 64 << 20
    zeros = gzip.compress(bytes(block), compresslevel=9, mtime=0)
    return gzip.compress(head, mtime=0) + zeros * (total // block)


def _network_seeds() -> tuple[list[Seed], dict, dict]:
    """The checkpoint seeds, and the state and Lightning dict the payload seeds start from."""
    state = net_state()
    meta = {"tsens.activation": "relu", "run": "fuzz", "epoch": "3"}
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in net_state(bn=True).items()}
    lightning = {
        "epoch": 3,
        "global_step": 30,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": {"lr": 0.01, "activation": "relu", "widths": [FEATURES, 5, 3]},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1, 2, 3]}]}],
    }
    old = dict(lightning, hyper_parameters=argparse.Namespace(lr=0.1, activation="relu"))
    old["state_dict"] = one_storage(old["state_dict"])
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    index = {"metadata": {"total_size": 0}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
    config = (
        "config.json",
        json.dumps({"model_type": "mlp", "hidden_act": "relu", "hidden_size": 5}).encode(),
    )
    seeds = [
        Seed.of(
            "safetensors",
            "mlp",
            CHECKPOINT,
            [("mlp.safetensors", safetensors_bytes(state, meta), "safetensors")],
        ),
        Seed.of(
            "safetensors", "bn-f16", CHECKPOINT, [("bn.safetensors", safetensors_bytes(half), "safetensors")]
        ),
        Seed.of("pt", "zip", CHECKPOINT, [("mlp.pt", torch_bytes(state), "zip")]),
        Seed.of("pt", "zip-bn", CHECKPOINT, [("bn.pth", torch_bytes(net_state(bn=True)), "zip")]),
        Seed.of(
            "pt-legacy",
            "legacy",
            CHECKPOINT,
            [("legacy.pt", torch_bytes(one_storage(state), legacy=True), "pickle")],
        ),
        Seed.of("ckpt", "lightning", CHECKPOINT, [("run.ckpt", torch_bytes(lightning), "zip")]),
        Seed.of(
            "ckpt", "lightning-legacy", CHECKPOINT, [("old.ckpt", torch_bytes(old, legacy=True), "pickle")]
        ),
        Seed.of(
            "hf",
            "sharded",
            CHECKPOINT,
            [
                (*config, "json"),
                ("model.safetensors.index.json", json.dumps(index).encode(), "json"),
                *(
                    (s, safetensors_bytes({k: state[k] for k in ks}), "safetensors")
                    for s, ks in shards.items()
                ),
            ],
            target=".",
        ),
        Seed.of(
            "hf",
            "bin",
            CHECKPOINT,
            [(*config, "json"), ("pytorch_model.bin", torch_bytes(state), "zip")],
            target=".",
        ),
    ]
    return seeds, state, lightning


def _array_seeds(x: np.ndarray, y: np.ndarray) -> list[Seed]:
    """.npz, .npy and safetensors data sets."""
    images = (x[:, :36] * 40).astype(np.uint8).reshape(8, 6, 6)
    st = safetensors_bytes({"x": torch.from_numpy(x), "y": torch.from_numpy(y)})
    return [
        Seed.of("npz", "stored", DATA, [("data.npz", npz_bytes({"x": x, "y": y}), "zip")]),
        Seed.of(
            "npz", "deflated", DATA, [("data.npz", npz_bytes({"X": x, "labels": y}, compressed=True), "zip")]
        ),
        Seed.of("npy", "float32", DATA, [("x.npy", npy_bytes(x), "npy")]),
        Seed.of("npy", "uint8-images", DATA, [("images.npy", npy_bytes(images), "npy")]),
        Seed.of("data.safetensors", "x-y", DATA, [("data.safetensors", st, "safetensors")]),
    ]


def _arrow_seeds(x: np.ndarray, y: np.ndarray) -> list[Seed]:
    """Parquet (columns, a list column, PNG images), Arrow files and streams, Feather."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    columns = pa.table({**{f"f{i}": x[:, i] for i in range(x.shape[1])}, "label": y})
    lists = pa.table({"pixels": pa.array(list(x), pa.list_(pa.float32())), "label": y})
    tables = {"columns": columns, "list": lists}
    try:
        from PIL import Image

        pngs = []
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(((x[i].reshape(6, 6) + 3) * 40).clip(0, 255).astype(np.uint8)).save(buf, "PNG")
            pngs.append({"bytes": buf.getvalue(), "path": None})
        tables["image"] = pa.table({"image": pngs, "label": y[:4]})
    except ImportError:  # pragma: no cover - Pillow is in the test extra
        pass
    seeds = []
    for name, table in tables.items():
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="none")
        seeds.append(Seed.of("parquet", name, DATA, [(f"{name}.parquet", buf.getvalue(), "parquet")]))
    for name, table in {"columns": columns, "list": lists}.items():
        sink = io.BytesIO()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        seeds.append(Seed.of("arrow", f"file-{name}", DATA, [("data.arrow", sink.getvalue(), "arrow")]))
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, columns.schema) as writer:
        writer.write_table(columns)
    seeds.append(Seed.of("arrow", "stream", DATA, [("stream.arrow", sink.getvalue(), "arrow")]))
    sink = io.BytesIO()
    feather.write_feather(columns, sink, compression="uncompressed")
    seeds.append(Seed.of("feather", "v2", DATA, [("data.feather", sink.getvalue(), "arrow")]))
    return seeds


def _image_seeds() -> list[Seed]:
    """IDX files (plain, gzip, a gzip bomb) and CIFAR batches (pickle protocols 2 and 5)."""
    images = (np.arange(4 * 36) % 256).astype(np.uint8).reshape(4, 6, 6)
    labels = np.array([0, 1, 2, 1], np.uint8)
    idx = [
        ("t10k-images-idx3-ubyte", idx_bytes(images), "idx"),
        ("t10k-labels-idx1-ubyte", idx_bytes(labels), "idx"),
    ]
    # a header that promises 144 bytes, a stream that inflates to 1 GiB
    bomb = [
        ("train-images-idx3-ubyte.gz", _bomb_bytes(idx_bytes(images)), "gzip"),
        (idx[1][0], idx[1][1], ""),
    ]
    cifar = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [0, 1, 2, 1],
        b"data": (np.arange(4 * 3072) % 256).astype(np.uint8).reshape(4, 3072),
        b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
    }
    cifar5 = {"data": cifar[b"data"], "fine_labels": [2, 1, 0, 1], "coarse_labels": [0, 0, 1, 1]}
    return [
        Seed.of("idx", "plain", DATA, idx),
        Seed.of("idx.gz", "gzip", DATA, [(n + ".gz", gzip_bytes(d), "gzip") for n, d, _ in idx]),
        Seed.of("idx.gz", "bomb", DATA, bomb),
        Seed.of("cifar", "protocol2", DATA, [("data_batch_1", pickle.dumps(cifar, 2), "pickle")]),
        Seed.of("cifar", "protocol5", DATA, [("train.pkl", pickle.dumps(cifar5, 5), "pickle")]),
    ]


@functools.cache
def generated_seeds() -> tuple[Seed, ...]:
    """The seeds this script writes itself (deterministic bytes), in a fixed order."""
    torch.manual_seed(0)
    networks, state, lightning = _network_seeds()
    x, y = data_arrays()
    seeds = [
        *networks,
        *payload_seeds(state, lightning),
        *_array_seeds(x, y),
        *_arrow_seeds(x, y),
        *_image_seeds(),
    ]
    # CIFAR batches hold 3 × 32 × 32 images: `tsens bound` checks them against a 3072-input net
    return tuple(
        Seed(s.fmt, s.name, s.kind, s.files, s.target, 3072) if "cifar" in s.fmt else s for s in seeds
    )
