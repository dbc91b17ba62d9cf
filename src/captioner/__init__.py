"""captioner: describe images in English sentences, for alt text.

Two wings.  Inference (no torch): api.py (Captioner, load) - modelfile.py (reads model files) -
runtime.py (back-end chosen once) - parallel.py (processes x threads
from the cores it may use; the pool of captioning processes) - backends/ (onnx: the default; torch: for GPUs) - search.py (greedy,
beam, guided, ensemble search over a step()) - preprocess.py - images.py - knowledge/ (tags, domain,
confidence, kind, ocr, alttext) - library/ (photo-library runs) - serve/ (HTTP API, app) - info.py
(version, model file digests, the model card in assets/) - cli.py.
Training (torch, the [train] extra): training/ (data, model, encoders, stages, train, scst, distributed,
evaluate, metrics, calibrate, export: the bridge that writes what the inference wing reads).

Nothing is sent anywhere: ONNX Runtime's telemetry (a device id and usage event written under
~/.cache/Microsoft on every run, queued for upload) is switched off here, before any module of the
package can import onnxruntime; a user's own setting of the variable is respected.
"""
import os

# the one place the package version is written: pyproject.toml reads it from here, and
# captioner --version, captioner info, the HTTP API and installed metadata all report it
__version__ = "0.1.0"

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from captioner.api import Caption, Captioner, load
from captioner.images import ImageError

__all__ = ["Caption", "Captioner", "ImageError", "load", "__version__"]
