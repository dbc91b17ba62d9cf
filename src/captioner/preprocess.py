"""The one preprocessing: an image -> the float32 array [3, size, size] an encoder reads.  numpy and
PIL only (no torch), so the ONNX Runtime path and the PyTorch path (``training/encoders.Preprocess``, which
wraps this) read the same numbers.

The image is resized to a fixed square *without cropping* (bicubic): the Flickr8k copies are already
squashed to 224x224, and a centre crop would cut away what the captions describe; then scaled to
[0, 1] and normalised by the ImageNet mean and standard deviation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_array(image: Image.Image, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
             out: np.ndarray | None = None) -> np.ndarray:
    """PIL image -> normalised float32 array [3, size, size] (written into ``out`` where given: a row of
    a batch, which then needs no copy of its own)."""
    return normalise(resized(image, size), mean, std, out)


def resized(image: Image.Image, size: int = 224) -> np.ndarray:
    """PIL image -> uint8 pixels [size, size, 3]: RGB, resized to the square without cropping (bicubic)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def normalise(pixels: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 pixels [size, size, 3] -> float32 [3, size, size] in [0, 1], less the mean, over the std.
    Computed in place in one array (``out``, or a new one): the same float32 operations in the same
    order as ``(x / 255 - mean) / std``, without three temporary copies of the image."""
    x = np.empty(pixels.shape[2:] + pixels.shape[:2], np.float32) if out is None else out
    np.copyto(x, pixels.transpose(2, 0, 1))
    np.divide(x, np.float32(255.0), out=x)
    np.subtract(x, np.asarray(mean, dtype=np.float32).reshape(3, 1, 1), out=x)
    np.divide(x, np.asarray(std, dtype=np.float32).reshape(3, 1, 1), out=x)
    return x


def to_pixels(x: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Normalised arrays [..., 3, H, W] back to [0, 1] pixels (for ``kind.colour_features``)."""
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.asarray(x, dtype=np.float32) * s + m


def decode_batch(paths: list, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, slot: str | None = None):
    """Open and resize a batch of files (in a decoding process, for a GPU) -> (errors: one message or
    None per path, uint8 pixels [b, size, size, 3] of the readable ones, their colour statistics
    [b, 12] (``knowledge/kind.py``)).  The pixels are ``resized``'s, which ``to_array`` normalises, so
    normalising them on the device (``backends/torch.py``) gives its numbers; the colour statistics are
    computed here, from ``normalise``'s arrays, exactly as on the CPU path.  ``slot``: a shared memory
    block of ``shared_batches.Ring`` to decode into; the pixels are then left there and their
    count comes back in their place."""
    from captioner.images import ImageError, open_image
    from captioner.knowledge.kind import colour_stats
    from captioner.shared_batches import attached

    shape = (len(paths), size, size, 3)
    rows = attached(slot, shape) if slot else np.empty(shape, np.uint8)
    errors, colour = [], []
    for path in paths:
        try:
            px = resized(open_image(path, at_least=2 * size), size)   # as api.Captioner._load decodes
            rows[len(colour)] = px
            colour.append(colour_stats(normalise(px, mean, std), mean, std))
            errors.append(None)
        except ImageError as e:
            errors.append(str(e))
        except Exception as e:  # never let one odd file stop a batch
            errors.append(f"{path}: cannot read image ({type(e).__name__}: {e})")
    if not colour:
        return errors, None, None
    return errors, (len(colour) if slot else rows[:len(colour)]), np.stack(colour)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing handed out with a model (``captioner.load(with_preprocess=True)``, CLIP's
    ``load()``): PIL image -> normalised float32 array [3, size, size].  Frozen, so worker processes can
    take it."""

    size: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __call__(self, image: Image.Image) -> np.ndarray:
        return to_array(image, self.size, self.mean, self.std)
