"""The on-disk feature cache: written batch by batch, read row by row, never loaded whole."""
import numpy as np
import pytest
import torch

from captioner.training.encoders import build_encoder
from captioner.training.features import Rows, extract_features, load_features, write_features


def test_written_cache_reads_back_any_rows(tiny_data, tmp_path):
    enc = build_encoder("efficientnet_lite2", pretrained=False, image_size=64)
    paths = sorted((tiny_data / "Images").glob("*.jpg"))
    names = [p.name for p in paths]
    ref = extract_features(enc, paths, batch_size=4, workers=0, progress=False)
    store = write_features(tmp_path / "c.safetensors", enc, paths, names, {"encoder": "x"}, batch_size=4,
                           workers=0, progress=False)          # any suffix: NAME.npy + NAME.json
    assert store.path == tmp_path / "c.npy" and (tmp_path / "c.json").is_file()
    assert store.shape == tuple(ref.shape) and len(store) == len(paths)
    assert torch.equal(store[[5, 0, 5, 17]], ref[[5, 0, 5, 17]])
    assert torch.equal(store[2:7], ref[2:7]) and torch.equal(store[torch.tensor([3, 1])], ref[[3, 1]])
    assert torch.equal(store[4], ref[4])
    assert np.array_equal(np.load(store.path), ref.numpy())        # numpy's own format, no pickle
    sub = Rows(store, [10, 2, 8])
    assert sub.size(0) == 3 and torch.equal(sub[torch.tensor([2, 0])], ref[[8, 10]])
    index, again, meta = load_features(tmp_path / "c.npy")
    assert index[names[3]] == 3 and meta == {"encoder": "x"} and torch.equal(again[[1]], ref[[1]])
    with pytest.raises(IndexError):
        store[[len(paths)]]
    assert load_features(tmp_path / "absent.npy") is None
    assert not list(tmp_path.glob(".*tmp*"))                        # no temporary file left behind
