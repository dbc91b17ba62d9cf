import pytest

from captioner.training.data import load_dataset, tokenize
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


def _coco_like(root):
    """A Karpathy JSON with COCO's filepath sub-folders and a restval split."""
    import json

    from PIL import Image

    images = []
    for i, (folder, split) in enumerate([("train2014", "train"), ("val2014", "restval"), ("val2014", "val"),
                                         ("val2014", "test"), ("train2014", "train")]):
        (root / folder).mkdir(parents=True, exist_ok=True)
        name = f"COCO_{folder}_{i:012d}.jpg"
        Image.new("RGB", (32, 24), (40 * i, 90, 200)).save(root / folder / name)
        images.append({"filepath": folder, "filename": name, "split": split,
                       "sentences": [{"raw": f"A picture number {i} .", "tokens": []},
                                     {"raw": "", "tokens": ["a", "photo"]}]})
    images.append({"filepath": "val2014", "filename": "gone.jpg", "split": "train",
                   "sentences": [{"raw": "an image that is not there"}]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))


def test_karpathy_coco_json_with_filepath(tmp_path):
    _coco_like(tmp_path / "coco")
    for data in (tmp_path / "coco", tmp_path / "coco" / "dataset_coco.json"):
        ds = load_dataset(data)
        assert ds.layout == "karpathy" and ds.image_dir == tmp_path / "coco"
        assert ds.images("train") == ["train2014/COCO_train2014_000000000000.jpg",
                                      "train2014/COCO_train2014_000000000004.jpg",
                                      "val2014/COCO_val2014_000000000001.jpg"]      # restval is train
        assert ds.images("dev") == ["val2014/COCO_val2014_000000000002.jpg"]
        assert ds.captions["val2014/COCO_val2014_000000000002.jpg"] == ["A picture number 2 .", "a photo"]
        assert ds.skipped == {"caption of a missing image": 1}
        assert all((ds.image_dir / n).is_file() for n in ds.images())


def _own_images(root, n):
    from PIL import Image

    (root / "photos" / "sub").mkdir(parents=True)
    names = []
    for i in range(n):
        name = f"photos/{'sub/' if i % 3 == 0 else ''}p{i}.png"
        Image.new("RGB", (16, 16), (i % 255, 30, 60)).save(root / name)
        names.append(name)
    return names


def test_own_csv_with_split_and_jsonl_without(tmp_path):
    import json

    names = _own_images(tmp_path, 60)
    rows = ["image,caption,split"] + [f'{n},"a photo, number {i}",{["train", "val", "test"][i % 3]}'
                                      for i, n in enumerate(names)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "mine.csv")
    assert ds.layout == "csv" and not ds.assigned_split and ds.image_dir == tmp_path
    assert [len(ds.images(s)) for s in ("train", "dev", "test")] == [20, 20, 20]
    assert ds.captions[names[1]] == ["a photo, number 1"]
    lines = [json.dumps({"image": n, "caption": f"photo {i}"}) for i, n in enumerate(names)]
    lines += [json.dumps({"image": n, "caption": "a second caption"}) for n in names[:5]]
    lines += [json.dumps({"image": "../outside.png", "caption": "escapes the folder"}), ""]
    (tmp_path / "mine.jsonl").write_text("\n".join(lines))
    a, b = load_dataset(tmp_path / "mine.jsonl"), load_dataset(tmp_path / "mine.jsonl")
    assert a.assigned_split and a.split_of == b.split_of                  # deterministic, by image
    assert len(a.captions[names[0]]) == 2 and a.skipped == {"malformed image name": 1}
    counts = [len(a.images(s)) for s in ("train", "dev", "test")]
    assert sum(counts) == 60 and counts[0] >= 45 and "by a hash" in a.summary()


def test_own_files_with_bad_rows_give_clear_errors(tmp_path):
    names = _own_images(tmp_path, 3)
    (tmp_path / "a.csv").write_text("file,text\nx.png,hello\n")
    with pytest.raises(ValueError, match=r"a.csv:1: expected a header with the columns 'image' and 'caption'"):
        load_dataset(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text(f"image,caption,split\n{names[0]},one,train\n{names[1]},two,holdout\n")
    with pytest.raises(ValueError, match=r"b.csv:3: split 'holdout'"):
        load_dataset(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text(f"image,caption,split\n{names[0]},one,train\n{names[0]},two,test\n")
    with pytest.raises(ValueError, match=r"c.csv:3: photos/sub/p0.png is in split 'train'"):
        load_dataset(tmp_path / "c.csv")
    (tmp_path / "d.jsonl").write_text('{"image": "photos/p1.png", "caption": "ok"}\n{not json}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: not valid JSON"):
        load_dataset(tmp_path / "d.jsonl")
    (tmp_path / "e.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"e.txt: a dataset file must be"):
        load_dataset(tmp_path / "e.txt")
