"""Inference back-ends: ``onnx`` (ONNX Runtime, the default; no torch) and ``torch`` (imported only
when chosen).  ``load`` picks one, once, at the edge."""
