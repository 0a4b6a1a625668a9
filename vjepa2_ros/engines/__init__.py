"""The encoder and predictor behind one interface, on three runtimes: torch, ONNX Runtime, TensorRT.

    from vjepa2_ros.engines import RuntimeConfig, open_runtime
    runtime = open_runtime(RuntimeConfig(kind="onnxruntime", engine_dir="models/engines"))

ONNX Runtime and TensorRT are imported only when their runtime is opened.
"""

from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.engines.torch_runtime import TorchRuntime

__all__ = ["Runtime", "RuntimeConfig", "TorchRuntime", "open_runtime"]
