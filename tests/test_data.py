import pytest

from captioner.data import load_dataset, tokenize
from conftest import SHARED, needs_shared


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog's ball, RED & blue .") == ["a", "dogs", "ball", "red", "blue"]


@pytest.mark.parametrize("layout", ["kaggle", "original", "karpathy"])
def test_fixture_layouts_agree(tiny_data, layout):
    ds = load_dataset(tiny_data, layout)
    assert ds.layout == layout
    assert len(ds.images()) == 18
    assert [len(ds.images(s)) for s in ("train", "dev", "test")] == [12, 3, 3]
    assert all(len(c) == 5 for c in ds.captions.values())
    assert not ds.skipped


def test_autodetect_prefers_kaggle(tiny_data):
    assert load_dataset(tiny_data).layout == "kaggle"


def test_unusable_entries_are_counted_not_dropped_silently(tiny_data):
    tok = tiny_data / "Flickr8k_text" / "Flickr8k.token.txt"
    with open(tok, "a") as f:
        f.write("missing.jpg#0\ta caption of an image that is not there\n")
        f.write("red_0.jpg.1#0\tthe dataset's malformed key\n")
        f.write("red_0.jpg#0\ta duplicate key\n")
        f.write("blue_0.jpg#5\t . \n")
        f.write("no tab on this line\n")
    ds = load_dataset(tiny_data, "original")
    assert ds.skipped == {"caption of a missing image": 1, "malformed image name": 1, "duplicate key": 1,
                          "empty caption": 1, "malformed line": 1}
    assert "skipped" in ds.summary()
    assert len(ds.captions["red_0.jpg"]) == 5


def test_bad_encoding_and_header_give_clear_errors(tiny_data):
    (tiny_data / "captions.txt").write_bytes(b"image,caption\nred_0.jpg,caf\xe9 au lait\n")
    with pytest.raises(ValueError, match="captions.txt: not UTF-8"):
        load_dataset(tiny_data, "kaggle")
    (tiny_data / "captions.txt").write_text("file,text\nred_0.jpg,hello\n")
    with pytest.raises(ValueError, match="captions.txt:1: expected the header"):
        load_dataset(tiny_data, "kaggle")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")


@needs_shared
def test_real_flickr8k_all_layouts():
    k = load_dataset(SHARED, "kaggle")
    assert len(k.images()) == 8091 and sum(map(len, k.captions.values())) == 40455
    assert [len(k.images(s)) for s in ("train", "dev", "test")] == [6000, 1000, 1000]
    o = load_dataset(SHARED, "original")
    # the token file's one malformed key (2258277193_586949ec62.jpg.1#0..4) is counted, not used
    assert o.skipped == {"malformed image name": 5}
    assert o.captions == k.captions
    j = load_dataset(SHARED, "karpathy")
    assert [len(j.images(s)) for s in ("train", "dev", "test")] == [6000, 1000, 1000]
    assert set(j.images("test")) == set(k.images("test"))
    # no image is in two splits
    assert not set(k.images("train")) & (set(k.images("dev")) | set(k.images("test")))
