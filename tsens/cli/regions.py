"""``tsens regions``: activation regions, membership and exact boundary distance per sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import decode, options, render
from .command import command
from .outputs import checked_targets, write_tables


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
@checked_targets()
def regions(**params: Any) -> None:
    """Region id, log membership ([T] eq. 4), exact distance to the region boundary (and its
    layer), path score P(x) ([T] eq. 3, 7) and ‖T(x)‖_F per sample ([T] §3.1).

    A larger boundary distance or membership means x sits deeper inside its region. The
    summary gives distinct regions, samples per region, the share of samples alone, the
    occupancy entropy (nats), S_emp, and with --test the share of test samples whose region
    holds a sample of --data.
    """
    from ..commands import regions as run

    options = ("membership", "temperature", "reading")
    result = decode.call(run, params, ("checkpoints", "data", "test"), options, _render)
    write_tables(result, params)


def _render(net: Any, summary: Sequence[dict[str, Any]], rows: Mapping[str, Any]) -> None:
    keys = ("samples", "regions", "max_per_region", "mean_per_region", "alone_share", "entropy")
    table = [(r["set"], *(r[k] for k in keys), r["boundary_distance_median"], r["s_emp"]) for r in summary]
    first = summary[0]["set"]
    caption = "".join(
        f"{r['set']} samples in a region that holds a {first} sample: {r['shared_region_share']:.2%}"
        for r in summary
        if "shared_region_share" in r
    )
    render.show_table(
        f"{summary[0]['checkpoint']}: {net.describe()}",
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
