import pytest
import torch
from PIL import Image

from captioner.training.encoders import Preprocess, build_encoder, find_torchvision_weights
from conftest import SHARED, needs_shared


def test_preprocess_squashes_without_cropping():
    p = Preprocess(32, (0.5,) * 3, (0.5,) * 3)
    img = Image.new("RGB", (100, 20), (255, 0, 0))
    img.paste((0, 0, 255), (90, 0, 100, 20))   # a blue strip at the far right edge
    x = p(img)
    assert x.shape == (3, 32, 32)
    assert x[2, :, -1].mean() > 0.9 and x[0, :, 0].mean() > 0.9   # both edges survive: no crop
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("name,channels,side", [("resnet50", 2048, 2), ("vgg16", 512, 4), ("efficientnet_lite2", 1280, 2)])
def test_encoders_random_weights_give_grids(name, channels, side):
    enc = build_encoder(name, pretrained=False, image_size=64)
    with torch.inference_mode():
        g = enc(torch.randn(1, 3, 64, 64))
    assert g.shape == (1, channels, side, side)
    assert enc.out_channels == channels
    params = enc.set_trainable(2)
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in enc.blocks[0].parameters())


def test_resnet50_offline_download_fails_with_both_ways_named(tmp_path, monkeypatch):
    import urllib.error

    calls = []

    def offline(url, **kw):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.delenv("CAPTIONER_ENCODER_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        build_encoder("resnet50")
    msg = str(e.value)
    assert calls == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]   # torchvision's own file
    assert "download failed" in msg and "Name or service not known" in msg
    assert "resnet50-0676ba61.pth" in msg and "--encoder-weights" in msg and str(tmp_path / "hub") in msg


def test_resnet50_downloads_into_the_hub_cache_where_there_is_internet(tmp_path, monkeypatch):
    import torchvision

    ref = torchvision.models.resnet50(weights=None)

    def online(url, model_dir=None, **kw):   # stands in for the network: writes what torchvision would
        target = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ref.state_dict(), target)
        return ref.state_dict()

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", online)
    monkeypatch.delenv("CAPTIONER_ENCODER_WEIGHTS", raising=False)
    enc = build_encoder("resnet50")
    assert torch.equal(enc.trunk.stages[4][0].conv1.weight, ref.layer4[0].conv1.weight)
    assert (tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth").is_file()
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_torchvision_weights("resnet50", str(tmp_path / "missing.pth"))


def test_resnet50_loads_standard_file_from_hub_cache_and_path(tmp_path, monkeypatch):
    import torchvision

    def no_network(*a, **k):
        raise AssertionError("a file in the cache must not be downloaded again")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    ref = torchvision.models.resnet50(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    f = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    torch.save(ref.state_dict(), f)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for enc in (build_encoder("resnet50"), build_encoder("resnet50", weights_path=str(f))):
        assert torch.equal(enc.trunk.stages[4][0].conv1.weight, ref.layer4[0].conv1.weight)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("alexnet")


@needs_shared
def test_lite2_pip_weights_recognise_a_dog():
    """The lukemelas -> timm key mapping is right if ImageNet classes come out right."""
    import timm

    from captioner.training.encoders import _lite2_weights, lite2_state_dict_to_timm
    net = timm.create_model("tf_efficientnet_lite2", pretrained=False).eval()
    net.load_state_dict(lite2_state_dict_to_timm(_lite2_weights(), net.state_dict()))
    enc = build_encoder()
    x = enc.preprocess(Image.open(SHARED / "Images" / "101654506_8eb26cfb60.jpg")).unsqueeze(0)
    with torch.inference_mode():
        top = net(x).argmax().item()
        assert torch.allclose(enc(x), net.forward_features(x), atol=1e-5)
    assert 151 <= top <= 268  # ImageNet's dog breeds


def test_numpy_preprocessing_gives_the_torch_arrays_bit_for_bit():
    """preprocess.to_array (numpy, the one preprocessing) against the torch code it replaced."""
    import numpy as np
    from PIL import Image

    from captioner.training.encoders import Preprocess
    from captioner.preprocess import to_array, to_pixels

    def torch_way(image, size, mean, std):   # encoders.Preprocess before the numpy preprocessing
        image = image.convert("RGB").resize((size, size), Image.BICUBIC) if image.size != (size, size) else image.convert("RGB")
        x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        x = x.view(size, size, 3).permute(2, 0, 1).float().div_(255.0)
        return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)

    rng = np.random.default_rng(0)
    pre = Preprocess()
    for shape, mode in (((224, 224, 3), "RGB"), ((375, 500, 3), "RGB"), ((90, 60), "L"), ((300, 300, 4), "RGBA")):
        im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        want = torch_way(im, pre.size, pre.mean, pre.std)
        got = pre(im)
        assert got.dtype == torch.float32 and torch.equal(got, want)
        assert np.array_equal(to_array(im), want.numpy())
        back = to_pixels(to_array(im))
        assert np.allclose(back, np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC)
                                            if im.size != (224, 224) else im.convert("RGB")).transpose(2, 0, 1) / 255, atol=1e-6)
