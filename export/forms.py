"""Which calibration form each backend should run by default.

``conv`` (a grouped Conv with a run-time weight) and ``matmul`` (per-tap batched MatMuls) give
the same outputs; which is faster depends on the backend. The table is set from
``benchmarks/results/export_forms-*.json`` (``python -m benchmarks.export_forms``): the form with
the lower median time summed over the presets and batch sizes measured there. A dynamic batch
always gets ``matmul``, the only form that exports one.
"""

from __future__ import annotations

from training.model.config import CALIBRATION_FORMS

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
    form = DEFAULT_CALIBRATION[backend] if batch != "dynamic" else "matmul"
    assert form in CALIBRATION_FORMS
    return form
