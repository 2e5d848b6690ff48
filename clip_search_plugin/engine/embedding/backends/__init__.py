"""Inference backends: the same open_clip model run by another runtime, used only where it gives the same vectors.

A registry of plain data (:data:`BACKENDS`), kept apart from exporting (:mod:`.export`), running (:mod:`.runtime`),
checking (:mod:`.verify`) and choosing (:mod:`.choice`).

- ``torch``: the open_clip model itself (fp32 on a CPU, fp16 on CUDA, MPS on Apple silicon).
- ``onnx``: the image tower exported to ONNX and run by ONNX Runtime in fp32 (identical vectors, a little faster).
- ``onnx-int8``: the same export with its matrix products quantized to int8 (weights per channel, activations per
  batch); about 1.7-1.9x the fp32 speed of a 2-core AVX2 CPU end to end, vectors within a cosine of 0.995 where it
  verifies.
- ``openvino``: the fp32 export run by OpenVINO on an Intel GPU when one is present (else on the CPU).

A build that uses ``onnx`` or ``onnx-int8`` also verifies that backend's text tower for queries (:mod:`.text`).

``auto`` chooses among those that verify on this computer, by their measured speed (see :mod:`.choice`).
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO, TORCH = "auto", "torch"


@dataclass(frozen=True)
class Backend:
    """One way to run a model's image tower."""

    name: str
    runtime: str  # "torch", "onnxruntime" or "openvino"
    summary: str


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(TORCH, "torch", "PyTorch, the model as trained (fp32 on a CPU, fp16 on a GPU)"),
        Backend("onnx", "onnxruntime", "ONNX Runtime, fp32 on the CPU"),
        Backend("onnx-int8", "onnxruntime", "ONNX Runtime, int8 matrix products on the CPU"),
        Backend("openvino", "openvino", "OpenVINO on an Intel GPU (or the CPU)"),
    )
}
CHOICES = (AUTO, *BACKENDS)
