"""``tsens regions``: activation regions, membership and exact boundary distance per sample."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from ..regions import MEMBERSHIP_MODES, membership_weighted_mean, region_statistics, shared_region_share
from ..sweep import regions_per_sample
from . import options, render
from .summaries import describe


@click.command()
@options.checkpoint_options
@click.option("--data", "data_spec", required=True, help="Data set: a name (digits, cifar, ...) or a file.")
@click.option(
    "--test", "test_spec", default=None, help="A second set: share of its samples in training regions."
)
@options.data_options
@click.option(
    "--membership",
    type=click.Choice(MEMBERSHIP_MODES),
    default="preact",
    show_default=True,
    help="σ of the distance to the nearest breakpoint (preact) or of the 0/1 indicator.",
)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@options.tangent_option("Reading of ‖T‖ used for the membership-weighted S_emp.")
@options.compute_options
@options.output_options
def regions(data_spec: str, test_spec: str | None, **params: Any) -> None:
    """Region id, log membership, exact distance to the region boundary (and its layer),
    path score P(x) and ‖T(x)‖_F per sample (SPEC §2.5).

    A larger boundary distance or membership means x sits deeper inside its region. The
    summary gives distinct regions, samples per region, the share of samples alone, the
    occupancy entropy (nats), S_emp, and with --test the share of test samples whose region
    holds a training sample.
    """
    nets = options.networks(params)
    compute = options.compute(params)
    sets = {"data": options.dataset(data_spec, params)}
    if test_spec:
        sets["test"] = options.dataset(test_spec, params)
    tables = []
    for net in nets:
        results = {}
        for name, data in sets.items():
            with options.progress_for(params, f"{net.path} ({name})", len(data)) as progress:
                results[name] = regions_per_sample(
                    net,
                    data,
                    membership=params["membership"],
                    temperature=params["temperature"],
                    tangent=params["reading"],
                    compute=compute,
                    progress=progress,
                )
            n = len(data)
            tables.append(
                options.per_checkpoint_table(net, results[name], {"set": [name] * n, "sample": np.arange(n)})
            )
        if not params["quiet"]:
            _summary(net.path, net.describe(), results)
    specs = {"data": data_spec, **({"test": test_spec} if test_spec else {})}
    options.emit("regions", tables, nets, specs, {**params, **specs})


def _summary(path: str, arch: str, results: dict[str, dict[str, np.ndarray]]) -> None:
    rows = []
    for name, cols in results.items():
        s = region_statistics(cols["region"])
        s_emp = membership_weighted_mean(cols["log_membership"], cols["tangent_fro"])
        median_dist = describe(cols["boundary_distance"])[3]
        rows.append((name, len(cols["region"]), *s.values(), median_dist, s_emp))
    caption = ""
    if "test" in results:
        share = shared_region_share(results["data"]["region"], results["test"]["region"])
        caption = f"test samples in a region that holds a training sample: {share:.2%}"
    render.show_table(
        f"{path}: {arch}",
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
        rows,
        caption=caption,
    )
