"""``bound`` as one library call: the data-free bounds on tangent sensitivity and the Jacobian
([T] Thm 3.1) of each checkpoint and, with data, the Gaussian bounds ([T] Thm 3.2, eq. 2)
beside the measured values (:func:`tsens.bounds.report`)."""

from __future__ import annotations

from .jobs import bound_job
from .result import Collector, CommandResult
from .runner import Progress, Runner
from .setup import Checkpoints, DataSpec, Setup


def bound(
    checkpoints: Checkpoints,
    data: DataSpec | None = None,
    *,
    reading: str = "sum",
    per_layer: bool = False,
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """One row per checkpoint (``per_layer``: per Linear layer, with each bound's layer terms)
    of log10 bounds on ‖T(x)‖_F (``reading``: of the summed logits, or of every logit) and
    ‖J_logit(x)‖_F, with ``data`` also the Gaussian fit of the active count, the Gaussian bounds
    and the measured values; ``extra["rows"]`` holds each checkpoint's row either way."""
    setup = setup or Setup()
    dataset = setup.dataset(data) if data is not None else None
    refs = setup.checkpoints(checkpoints, {"data": dataset} if dataset is not None else None)
    options = {**setup.record(), "reading": reading, "per_layer": per_layer}
    collector = Collector("bound", {"data": dataset.spec if dataset is not None else None}, options)
    runner = Runner(setup.executor_for(), progress)
    shared = dict(data=dataset, reading=reading, compute=setup.compute, load=setup.loader())
    samples = len(dataset) if dataset is not None else 0
    rows = []
    for ref, out in zip(refs, runner.map(bound_job, refs, shared, size=lambda _: samples), strict=True):
        row = out.detail.row()
        columns = out.detail.layer_rows() if per_layer else {k: [v] for k, v in row.items()}
        columns.pop("checkpoint")
        collector.add(ref, out.network, columns, out.summary, out.applied)
        runner.progress.checkpoint(out.network, out.summary, columns)
        rows.append(row)
    return collector.result({"rows": rows})
