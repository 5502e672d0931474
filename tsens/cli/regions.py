"""``tsens regions``: activation regions, membership and exact boundary distance per sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..measures import Options
from ..stream import SetResult
from ..summaries import regions_summary
from . import options, render
from .command import command
from .flow import per_sample
from .outputs import checked_targets

MEASURES = ("region", "membership", "boundary", "path_score", "tangent")


@command()
@options.checkpoint_options
@options.data_option()
@options.data_option("--test", required=False, help="A second set: share of its samples in training regions.")
@options.preprocess_options
@options.membership_options
@options.tangent_option("Reading of ‖T‖ used for the membership-weighted S_emp.")
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets
def regions(**params: Any) -> None:
    """Region id, log membership ([T] eq. 4), exact distance to the region boundary (and its
    layer), path score P(x) ([T] eq. 3, 7) and ‖T(x)‖_F per sample ([T] §3.1).

    A larger boundary distance or membership means x sits deeper inside its region. The
    summary gives distinct regions, samples per region, the share of samples alone, the
    occupancy entropy (nats), S_emp, and with --test the share of test samples whose region
    holds a training sample.
    """
    settings = Options(
        reading=params["reading"], membership=params["membership"], temperature=params["temperature"]
    )
    specs = {"data": params["data"], **({"test": params["test"]} if params["test"] else {})}
    per_sample(
        "regions",
        params,
        specs,
        MEASURES,
        regions_summary,
        _render,
        options=settings,
        columns=stacked_columns,
    )


def stacked_columns(results: Mapping[str, SetResult]) -> dict[str, np.ndarray]:
    """The sets' columns one under the other, with a ``set`` column in front."""
    per_set = {name: r.columns for name, r in results.items()}
    names = list(per_set)
    out = {"set": np.concatenate([np.full(len(per_set[n]["sample"]), n, dtype=object) for n in names])}
    for key in per_set[names[0]]:
        out[key] = np.concatenate([per_set[n][key] for n in names])
    return out


def _render(rows: list[dict[str, Any]], arch: str) -> None:
    keys = ("samples", "regions", "max_per_region", "mean_per_region", "alone_share", "entropy")
    table = [(r["set"], *(r[k] for k in keys), r["boundary_distance_median"], r["s_emp"]) for r in rows]
    shared = [r for r in rows if "shared_region_share" in r]
    caption = "".join(
        f"{r['set']} samples in a region that holds a training sample: {r['shared_region_share']:.2%}"
        for r in shared
    )
    render.show_table(
        f"{rows[0]['checkpoint']}: {arch}",
        [
            "set",
            "samples",
            "regions",
            "max/region",
            "mean/region",
            "alone",
            "entropy",
            "median dist.",
            "S_emp",
        ],
        table,
        caption=caption,
    )
