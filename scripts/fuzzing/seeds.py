"""Seeds: valid inputs that the cases mutate. What a seed is, and the seeds found under
``tests/data/formats/`` (one per checkpoint or data file, or per directory a checkpoint format
claims), so that new formats join the fuzzing without a change here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tsens.checkpoints

from .encoding import FEATURES

REPO = Path(__file__).resolve().parents[2]
EXTERNAL = REPO / "tests" / "data" / "formats"
CHECKPOINT, DATA = "checkpoint", "data"


@dataclass(frozen=True)
class SeedFile:
    """One file of a seed: its name, bytes, and the structure its mutators understand
    ("" = copied unchanged)."""

    name: str
    data: bytes
    structure: str


@dataclass(frozen=True)
class Seed:
    """A valid input: the files written side by side into a case directory, the one given to
    the entry point (``"."``: the directory itself), and the summary row it counts in."""

    fmt: str
    name: str
    kind: str
    files: tuple[SeedFile, ...]
    target: str
    features: int = FEATURES

    @classmethod
    def of(
        cls, fmt: str, name: str, kind: str, files: Sequence[tuple[str, bytes, str]], target: str = ""
    ) -> Seed:
        """A seed of (name, bytes, structure) files; the target defaults to the first file."""
        fs = tuple(SeedFile(n, d, s) for n, d, s in files)
        return cls(fmt, name, kind, fs, target or fs[0].name)

    @property
    def mutable(self) -> list[SeedFile]:
        return [f for f in self.files if f.structure]


# --- seeds from tests/data/formats ---------------------------------------------------------

_SIDE_SUFFIXES = (".npz", ".json", ".md", ".txt", ".py", ".sh", ".cfg", ".yaml", ".yml")
_DATA_SUFFIXES = (".npz", ".npy", ".parquet", ".arrow", ".feather", ".pkl", ".pickle")


def _suffix(name: str) -> str:
    """``.weights.h5`` for ``mlp.weights.h5``; the last suffix otherwise."""
    lowered = name.lower()
    for compound in (".weights.h5", ".safetensors.index.json", ".bin.index.json", ".tar.gz"):
        if lowered.endswith(compound):
            return compound
    return Path(lowered).suffix


def _stem(name: str) -> str:
    return name[: len(name) - len(_suffix(name))] if _suffix(name) else name


def structure_of(name: str, data: bytes) -> str:
    """The structure the mutators use for a file, from its name and first bytes."""
    suffix = _suffix(name)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:6] == b"\x93NUMPY":
        return "npy"
    if data[:8] == b"\x89HDF\r\n\x1a\n" or suffix in (".h5", ".hdf5", ".weights.h5"):
        return "h5"
    if data[:4] == b"PAR1":
        return "parquet"
    if data[:6] == b"ARROW1" or data[:4] == b"\xff\xff\xff\xff":
        return "arrow"
    by_suffix = {
        ".safetensors": "safetensors",
        ".msgpack": "msgpack",
        ".flax": "msgpack",
        ".onnx": "onnx",
        ".json": "json",
        ".pkl": "pickle",
        ".pickle": "pickle",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    if data[:1] == b"\x80" and suffix in (".pt", ".pth", ".bin", ".ckpt", ""):
        return "pickle"
    if "idx" in name and "ubyte" in name:
        return "idx"
    return "raw"


def _claimed_dir(path: Path) -> bool:
    return any(f.claims(path) for f in tsens.checkpoints.FORMATS if f.claims is not None)


def external_seeds(root: Path = EXTERNAL) -> list[Seed]:
    """A seed per checkpoint or data file (or claimed directory) under ``root``; the summary
    row is the top directory and the suffix (``keras.weights.h5``)."""
    if not root.is_dir():
        return []
    seeds: list[Seed] = []

    def walk(directory: Path, top: str) -> None:
        entries = sorted(directory.iterdir())
        files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
        stems = {_stem(p.name) for p in entries if p.suffix.lower() not in _SIDE_SUFFIXES}
        side = [p for p in files if p.suffix.lower() in _SIDE_SUFFIXES]
        # an .npz named like a checkpoint (or a directory) beside it holds reference outputs
        siblings = [p for p in side if not (p.suffix.lower() == ".npz" and _stem(p.name) in stems)]
        originals = [p for p in files if p not in side]
        originals += [p for p in side if p.suffix.lower() == ".npz" and _stem(p.name) not in stems]
        for p in originals:
            data = p.read_bytes()
            suffix = _suffix(p.name)
            kind = DATA if suffix in _DATA_SUFFIXES or ("idx" in p.name and "ubyte" in p.name) else CHECKPOINT
            files_ = (SeedFile(p.name, data, structure_of(p.name, data)),) + tuple(
                SeedFile(s.name, s.read_bytes(), "") for s in siblings
            )
            seeds.append(
                Seed(f"{top}{suffix or '.' + p.name}", str(p.relative_to(root)), kind, files_, p.name)
            )
        for d in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
            if _claimed_dir(d):
                members = sorted(q for q in d.rglob("*") if q.is_file())
                fs = tuple(
                    SeedFile(str(q.relative_to(d)), q.read_bytes(), structure_of(q.name, q.read_bytes()))
                    for q in members
                )
                seeds.append(Seed(f"{top}/dir", str(d.relative_to(root)), CHECKPOINT, fs, "."))
            else:
                walk(d, top)

    for top in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        walk(top, top.name)
    return seeds
