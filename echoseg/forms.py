"""The calibration forms, their rules, and which one each backend runs by default: one table.

``conv`` (a grouped Conv with a run-time weight) and ``matmul`` (per-tap batched MatMuls) give
the same outputs. ``conv`` folds the batch into the Conv's static ``group`` attribute, so its
exports have a fixed batch; ``matmul`` exports a dynamic batch. Which is faster depends on the
backend. The table is set from
``benchmarks/results/export_forms-*.json`` (``python -m benchmarks.export_forms``): the form with
the lower median time summed over the presets and batch sizes measured there. A dynamic batch
always gets ``matmul``, the only form that exports one.
"""

from __future__ import annotations

from echoseg.config import CALIBRATION_FORMS

# How the calibration's max-pool summaries are written in exported graphs by default (recorded in
# every export's metadata and in the export cache's key, so a file says which graph it holds):
# "slices", a static slice and a max per bin (about 300 ops per summary), or "masked-max", six ops
# per summary; equal numbers. Must match ``training.model.calibration.SUMMARY_DEFAULT`` (tested).
SUMMARY_FORM = "slices"

# form -> whether an export of it needs a fixed batch
NEEDS_STATIC_BATCH: dict[str, bool] = {"conv": True, "matmul": False}

# backend -> form. Measured (benchmarks/results/export_forms-cpu.json, geometric mean of the
# conv/matmul time ratio over lite/paper x batch 1/8): torch-cpu 0.39 -> conv; onnxruntime-cpu
# 1.16 -> matmul (conv 4-6 % faster for lite, twice slower for paper at batch 8).
# Not measured yet (no GPU here): the portable matmul form until export_forms-cuda.json says otherwise.
DEFAULT_CALIBRATION: dict[str, str] = {
    "torch-cpu": "conv",
    "onnxruntime-cpu": "matmul",
    "torch-cuda": "matmul",
    "onnxruntime-cuda": "matmul",
    "tensorrt": "matmul",
}
DEFAULT_BACKEND = "onnxruntime-cpu"


def default_calibration(backend: str = DEFAULT_BACKEND, batch: str | int = "dynamic") -> str:
    """The calibration form to export for ``backend`` and ``batch`` (``"dynamic"`` or an integer)."""
    if backend not in DEFAULT_CALIBRATION:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {sorted(DEFAULT_CALIBRATION)}")
    form = DEFAULT_CALIBRATION[backend]
    if batch == "dynamic" and needs_static_batch(form):
        form = "matmul"
    assert form in CALIBRATION_FORMS
    return form


def needs_static_batch(calibration: str) -> bool:
    """Whether an export of ``calibration`` must fix its batch size."""
    if calibration not in NEEDS_STATIC_BATCH:
        raise ValueError(f"calibration must be one of {CALIBRATION_FORMS}, got {calibration!r}")
    return NEEDS_STATIC_BATCH[calibration]


def parse_batch(batch: str | int) -> str | int:
    """``"dynamic"`` or a positive integer (also given as a string, e.g. from the command line)."""
    if isinstance(batch, str):
        if batch == "dynamic":
            return batch
        if not batch.isdigit():
            raise ValueError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
        batch = int(batch)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def check_form(calibration: str, batch: str | int) -> None:
    """Refuse combinations that cannot be exported, with the way out."""
    if needs_static_batch(calibration) and batch == "dynamic":
        raise ValueError(
            f"the {calibration!r} calibration form needs a fixed batch (its grouped Conv folds the batch "
            "into a static ONNX attribute): pass a batch size (--batch N), or use --calibration matmul "
            "for a dynamic batch"
        )
