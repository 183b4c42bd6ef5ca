"""Backends: edgekit (ek-run on a device, Session locally), onnxruntime, LiteRT, torch eager.

The in-process ones run in a child process (`child.py`) through the shared loop in
`common.py`; all produce ek-run's JSON keys (docs/runtime.md)."""

# Which model file format each backend reads.
FORMATS = {"edgekit": "ekm", "session": "ekm", "onnxruntime": "onnx", "litert": "tflite",
           "torch": "ekm"}
