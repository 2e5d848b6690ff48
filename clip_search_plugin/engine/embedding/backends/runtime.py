"""Running an exported tower: normalised pixels (N, 3, S, S) float32, or tokens (N, n) int64, in; features (N, D)
float32 out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...errors import ModelError


class ImageTower(Protocol):
    """What the embedder calls to turn a batch of normalised pixels (or of tokens: a text tower) into features."""

    def __call__(self, inputs: Any, /) -> Any: ...


def cpu_threads() -> int:
    """The threads a runtime computes with: as many as PyTorch uses here (the physical cores)."""
    import torch

    return max(1, torch.get_num_threads())


class OnnxTower:
    """An ONNX file run by ONNX Runtime on the CPU.

    Its threads sleep when idle instead of spinning, so the threads that read and cut the next tiles get the
    cores while the model waits for them.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load {path.name} ({str(exc)[:200]}).") from exc
        self.input = self.session.get_inputs()[0].name

    def __call__(self, inputs: Any) -> Any:
        """Features of a batch of normalised pixels (an image tower) or of tokens (a text tower)."""
        import torch

        array = inputs.detach().cpu().numpy()
        array = np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else array.dtype)
        return torch.from_numpy(self.session.run(None, {self.input: array})[0])


def openvino_device() -> str | None:
    """'GPU' when OpenVINO sees an Intel GPU here, 'CPU' when it is installed without one, None when missing."""
    try:
        import openvino as ov
    except ImportError:
        return None
    devices = ov.Core().available_devices
    return "GPU" if any(d.startswith("GPU") for d in devices) else "CPU"


class OpenVinoTower:
    """An ONNX file compiled by OpenVINO for ``device`` (an Intel GPU computes in fp16, a CPU in fp32)."""

    def __init__(self, path: Path, device: str) -> None:
        import openvino as ov

        try:
            compiled = ov.Core().compile_model(str(path), device, {"PERFORMANCE_HINT": "LATENCY"})
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot compile {path.name} for {device} ({str(exc)[:200]}).") from exc
        self.request = compiled.create_infer_request()
        self.device = device

    def __call__(self, pixels: Any) -> Any:
        import torch

        array = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        result = self.request.infer({0: array})
        return torch.from_numpy(np.array(result[0], dtype=np.float32))
