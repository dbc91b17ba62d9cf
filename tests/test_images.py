"""Odd images as users send them: each is captioned-ready RGB or gets one clear ImageError."""
import io

import pytest
from PIL import Image

from captioner.images import ImageError, expand_inputs, open_image


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert open_image(save(rgba, tmp_path / "a.png")).getpixel((0, 0)) == (255, 255, 255)  # alpha -> white
    for mode in ("L", "P", "I;16", "CMYK", "1"):
        img = Image.new(mode, (8, 4))
        ext = "jpg" if mode == "CMYK" else "png" if mode != "1" else "bmp"
        out = open_image(save(img, tmp_path / f"x_{mode.replace(';', '')}.{ext}"))
        assert out.mode == "RGB" and out.size == (8, 4)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    p = save(img, tmp_path / "r.jpg", exif=exif.tobytes())
    assert open_image(p).size == (20, 40)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("P", (10, 10), i) for i in (1, 2, 3)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert open_image(p).size == (10, 10)


@pytest.mark.parametrize("content,msg", [(b"", "empty file"), (b"hello world", "not an image"),
                                         (b"\x89PNG\r\n\x1a\n\x00\x00", "not an image|corrupt")])
def test_bad_files(tmp_path, content, msg):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=msg) as e:
        open_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, "JPEG")
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageError, match="corrupt|truncated"):
        open_image(p)


def test_directory_and_missing(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        open_image(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.jpg")


def test_expand_inputs(tmp_path):
    for n in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.PNG"), str(tmp_path / "b.jpg")]
    assert expand_inputs([str(tmp_path / "*.jpg")]) == [str(tmp_path / "b.jpg")]
    assert expand_inputs([str(tmp_path / "*.gif")]) == [str(tmp_path / "*.gif")]  # reported later as missing
