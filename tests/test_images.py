"""Odd images as users send them: each is captioned-ready RGB or gets one clear ImageError."""
import io

import pytest
from PIL import Image

from captioner.images import ImageError, expand_inputs, open_image, read_path_list


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


def test_folders_are_walked_recursively_hidden_skipped_each_path_once(tmp_path):
    for n in ("b.jpg", "sub/c.webp", "sub/deeper/d.TIFF", "sub/notes.txt", ".thumbs/e.jpg", "sub/.f.jpg"):
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)   # not followed
    want = [str(tmp_path / n) for n in ("b.jpg", "sub/c.webp", "sub/deeper/d.TIFF")]
    assert expand_inputs([str(tmp_path)]) == want
    assert expand_inputs([str(tmp_path), str(tmp_path / "b.jpg")]) == want     # named twice, captioned once
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand_inputs([str(empty)]) == [str(empty)]                         # reported, not skipped


def test_path_list_file(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# photos to caption\na.jpg\n\n  b/c.png  \n", encoding="utf-8")
    assert read_path_list(lst) == ["a.jpg", "b/c.png"]
    with pytest.raises(FileNotFoundError, match="--from-list .*no such file"):
        read_path_list(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_path_list(tmp_path / "bin.txt")


def make_zoo(folder):
    """Every kind of file users send: -> {filename: True if it must caption, False if it must fail}."""
    from PIL import PngImagePlugin  # noqa: F401

    folder.mkdir(parents=True, exist_ok=True)
    ok = {}
    Image.new("RGBA", (50, 40), (0, 128, 0, 128)).save(folder / "alpha.png"); ok["alpha.png"] = True
    Image.new("P", (50, 40), 3).save(folder / "palette.png"); ok["palette.png"] = True
    Image.new("I;16", (50, 40), 3000).save(folder / "sixteen.png"); ok["sixteen.png"] = True
    Image.new("L", (50, 40), 90).save(folder / "gray.jpg"); ok["gray.jpg"] = True
    Image.new("CMYK", (50, 40), (10, 200, 30, 0)).save(folder / "cmyk.jpg"); ok["cmyk.jpg"] = True
    Image.new("RGB", (50, 40), (9, 9, 200)).save(folder / "pic.bmp"); ok["pic.bmp"] = True
    Image.new("RGB", (50, 40), (9, 9, 200)).save(folder / "pic.webp"); ok["pic.webp"] = True
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(folder / "anim.webp", save_all=True, append_images=frames[1:]); ok["anim.webp"] = True
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:]); ok["anim.gif"] = True
    Image.new("RGB", (1, 1), (255, 255, 255)).save(folder / "one.png"); ok["one.png"] = True
    Image.new("RGB", (4000, 3), (20, 20, 20)).save(folder / "wide.png"); ok["wide.png"] = True
    Image.new("RGB", (20, 20)).save(folder / "Ünïcødé 写真.JPG"); ok["Ünïcødé 写真.JPG"] = True
    Image.new("RGB", (20, 20)).save(folder / "noextension", format="PNG"); ok["noextension"] = True
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (60, 20)).save(folder / "rotated.jpg", exif=exif.tobytes()); ok["rotated.jpg"] = True
    (folder / "zero.jpg").write_bytes(b""); ok["zero.jpg"] = False
    (folder / "text.jpg").write_text("I am not a picture"); ok["text.jpg"] = False
    (folder / "random.png").write_bytes(bytes(range(256)) * 40); ok["random.png"] = False
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[:400]); ok["truncated.jpg"] = False
    # a PNG header that claims 100000 x 100000 pixels (10 gigapixels) and holds almost nothing
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    ok["bomb.png"] = False
    (folder / "a_folder.jpg").mkdir(); ok["a_folder.jpg"] = False
    return ok


def test_zoo(tmp_path):
    for name, good in make_zoo(tmp_path / "zoo").items():
        p = tmp_path / "zoo" / name
        if good:
            img = open_image(p)
            assert img.mode == "RGB" and min(img.size) >= 1, name
        else:
            with pytest.raises(ImageError) as e:
                open_image(p)
            assert name in str(e.value) and "\n" not in str(e.value), name
    assert open_image(tmp_path / "zoo" / "rotated.jpg").size == (20, 60)   # EXIF orientation 8 applied
    assert "too large" in _err(tmp_path / "zoo" / "bomb.png")


def test_a_large_jpeg_is_decoded_smaller_and_a_large_png_is_named_with_the_limit(tmp_path):
    """Over MAX_PIXELS (Pillow's warning limit, 89.5 megapixels), a JPEG such as a 100-megapixel camera's is
    decoded at half its size by libjpeg; a PNG is refused, naming its size and the limit.  Before, both were
    refused as a "decompression bomb", under a declared limit of 256 megapixels that never applied."""
    Image.new("RGB", (10_000, 9_000), (200, 30, 30)).save(tmp_path / "big.jpg", quality=50)
    Image.new("RGB", (10_000, 9_000), (30, 200, 30)).save(tmp_path / "big.png", compress_level=1)
    img = open_image(tmp_path / "big.jpg")
    assert img.size == (5_000, 4_500) and img.mode == "RGB" and img.getpixel((2_500, 2_250))[0] > 150
    assert _err(tmp_path / "big.png").endswith(
        "big.png: image too large (10000x9000, 90.0 megapixels; the limit is 89.5)")


def _err(p):
    try:
        open_image(p)
    except ImageError as e:
        return str(e)
    return ""


def test_a_large_jpeg_decodes_at_the_smallest_scale_that_keeps_what_the_caller_needs(tmp_path):
    """``at_least``: libjpeg decodes at 1/2, 1/4 or 1/8 of the size while the shorter side keeps that many
    pixels (a phone's 4032 x 3024 photo for a 224-pixel model, at_least 448: 1/4, 1008 x 756); without it,
    and for other formats, every pixel."""
    Image.new("RGB", (4032, 3024), (20, 120, 220)).save(tmp_path / "phone.jpg", quality=60)
    Image.new("RGB", (4032, 3024), (20, 120, 220)).save(tmp_path / "phone.png", compress_level=1)
    assert open_image(tmp_path / "phone.jpg", at_least=448).size == (1008, 756)
    assert open_image(tmp_path / "phone.jpg", at_least=3000).size == (4032, 3024)
    assert open_image(tmp_path / "phone.jpg").size == (4032, 3024)
    assert open_image(tmp_path / "phone.png", at_least=448).size == (4032, 3024)
