"""What a run does (its options), which seeds it uses, and which case each index is: the plan
draws every case from ``Random(f"{seed}:{index}")``, so a case is the same on every run and can
be replayed alone."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .generated import generated_seeds
from .mutators import learn_h5, mutate
from .seeds import DATA, EXTERNAL, REPO, Seed, external_seeds

DEFAULT_SAVE_DIR = REPO / "build" / "fuzz"


@dataclass
class Options:
    """What one fuzzing run does (the command line's options)."""

    seed: int = 0
    cases: int = 1000
    formats: tuple[str, ...] = ()
    workers: int = max(os.cpu_count() or 1, 1)
    timeout: float = 10.0
    memory_mb: int = 512
    rlimit: bool = True
    cli_every: int = 10
    save_dir: Path = DEFAULT_SAVE_DIR
    external: Path | None = EXTERNAL
    quiet: bool = False


def all_seeds(external: Path | None = EXTERNAL) -> list[Seed]:
    return [*generated_seeds(), *(external_seeds(external) if external is not None else [])]


def select(seeds: list[Seed], formats: Sequence[str]) -> list[Seed]:
    """The seeds whose format is named, or starts with a name followed by ``.``/``/``
    (``keras`` selects ``keras.keras`` and ``keras.weights.h5``)."""
    if not formats:
        return seeds
    unknown = [f for f in formats if not any(_matches(s.fmt, f) for s in seeds)]
    if unknown:
        raise SystemExit(f"fuzz.py: unknown formats {unknown}; see --list-formats")
    return [s for s in seeds if any(_matches(s.fmt, f) for f in formats)]


def _matches(fmt: str, name: str) -> bool:
    return fmt == name or fmt.startswith((name + ".", name + "/"))


@dataclass(frozen=True)
class Case:
    """One input: a seed with (unless it is a seed case) one to three mutations."""

    index: int
    seed: Seed
    files: tuple[tuple[str, bytes], ...]
    mutation: str
    cli: bool

    def write(self, directory: Path) -> Path:
        """The case's files written into ``directory``; the path the entry points get."""
        for name, data in self.files:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        return directory if self.seed.target == "." else directory / self.seed.target

    def cli_args(self, target: Path, nets: dict[int, Path]) -> list[str] | None:
        """The ``tsens`` command this case also runs (data: checked against a network of
        ``nets``, by input width), or None."""
        if not self.cli:
            return None
        if self.seed.kind == DATA:
            return ["bound", str(nets[self.seed.features]), "--data", str(target)]
        return [("info", "bound")[(self.index // 2) % 2], str(target)]


@dataclass
class Plan:
    """The case for each index: the first ``len(seeds)`` cases are the seeds unchanged, the
    rest cycle through the formats, each drawing a seed and mutations from ``Random(f"{seed}:{index}")``."""

    seeds: list[Seed]
    seed: int = 0
    cli_every: int = 10
    formats: list[str] = field(init=False)

    def __post_init__(self) -> None:
        learn_h5(self.seeds)
        self.formats = sorted({s.fmt for s in self.seeds})
        self.by_format = {f: [s for s in self.seeds if s.fmt == f] for f in self.formats}

    @classmethod
    def of(cls, options: Options) -> Plan:
        """The plan of a run: its selected seeds, master seed and CLI rate."""
        return cls(select(all_seeds(options.external), options.formats), options.seed, options.cli_every)

    def case(self, index: int) -> Case:
        cli = self.cli_every > 0 and index % self.cli_every == 0
        if index < len(self.seeds):
            seed = self.seeds[index]
            return Case(index, seed, tuple((f.name, f.data) for f in seed.files), "none (the seed)", cli)
        rng = random.Random(f"{self.seed}:{index}")
        fmt = self.formats[(index - len(self.seeds)) % len(self.formats)]
        seed = rng.choice(self.by_format[fmt])
        files = {f.name: f.data for f in seed.files}
        mutable = seed.mutable
        steps = []
        for _ in range(rng.choices((1, 2, 3), (70, 20, 10))[0]):
            target = rng.choice(mutable)
            files[target.name], what = mutate(rng, files[target.name], target.structure)
            steps.append(f"{target.name}: {what}")
        return Case(index, seed, tuple(files.items()), " + ".join(steps), cli)
