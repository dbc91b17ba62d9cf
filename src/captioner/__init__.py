"""captioner: describe photos in English sentences.

Map: data.py (datasets, splits, tokens) - vocab.py - encoders.py (CNNs + preprocessing) -
model.py (config, LSTM decoders) - decode.py (greedy/beam) - metrics.py (BLEU, ROUGE-L,
CIDEr-D) - checkpoint.py (safetensors files) - features.py (feature cache) - train.py -
evaluate.py - api.py (Captioner, load) - images.py (safe image opening) - plots.py - cli.py;
kind.py (what kind of image) - ocr.py (the text in it) - alttext.py - wording.py.

Nothing is sent anywhere: ONNX Runtime's telemetry (a device id and usage event written under
~/.cache/Microsoft on every run, queued for upload) is switched off here, before any module of the
package can import onnxruntime; a user's own setting of the variable is respected.
"""
import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from captioner.api import Caption, Captioner, load
from captioner.images import ImageError

__all__ = ["Caption", "Captioner", "ImageError", "load"]
__version__ = "0.1.0"
