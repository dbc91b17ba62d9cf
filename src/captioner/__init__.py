"""captioner: describe photos in English sentences.

Map: data.py (datasets, splits, tokens) - vocab.py - encoders.py (CNNs + preprocessing) -
model.py (config, LSTM decoders) - decode.py (greedy/beam) - metrics.py (BLEU, ROUGE-L,
CIDEr-D) - checkpoint.py (safetensors files) - features.py (feature cache) - train.py -
evaluate.py - api.py (Captioner, load) - images.py (safe image opening) - plots.py - cli.py.
"""
from .api import Caption, Captioner, load
from .images import ImageError

__all__ = ["Caption", "Captioner", "ImageError", "load"]
__version__ = "0.1.0"
