import pytest

from captioner.vocab import Vocab


def test_build_threshold_roundtrip(tmp_path):
    toks = [["a", "dog", "runs"], ["a", "dog"], ["a", "cat"]]
    v = Vocab.build(toks, min_count=2)
    assert v.itos == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]
    ids = v.encode(["a", "cat", "dog"])
    assert ids == [1, 4, 3, 5, 2]
    assert v.decode(ids) == ["a", "<unk>", "dog"]
    assert v.decode([4, 5, 2, 4]) == ["a", "dog"]  # stops at <end>
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos
    assert (tmp_path / "v.json").read_text().startswith('["<pad>"')


def test_rejects_bad_json():
    with pytest.raises(ValueError):
        Vocab.from_json('{"a": 1}')
    with pytest.raises(ValueError):
        Vocab.from_json('["a", "b"]')
