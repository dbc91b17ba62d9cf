"""documents/paths.py (resolving an image reference, never outside the folder given) and documents/context.py
(the WAI decision rules, one test each)."""
from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from captioner.documents import context as rules
from captioner.documents import paths
from captioner.documents.refs import Context, ImageRef


def _png(size=(8, 8), colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def site(tmp_path):
    (tmp_path / "site" / "img").mkdir(parents=True)
    (tmp_path / "site" / "guide").mkdir()
    (tmp_path / "site" / "img" / "my cat.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    return tmp_path / "site"


def _resolve(site, src, doc="guide/page.md", root=None):
    d = str(site / doc)
    ref = ImageRef(d, {}, src, None, "k")
    return paths.resolve(ref, paths.allowed_folders([site], root), root)


def test_relative_paths_are_url_decoded_without_query_or_fragment(site):
    r = _resolve(site, "../img/my%20cat.png?v=3#top")
    assert r.problem is None and r.image == os.path.normpath(site / "img" / "my cat.png")


@pytest.mark.parametrize("src", ["http://example.com/a.png", "https://example.com/a.png", "//cdn.example.com/a.png"])
def test_remote_images_are_not_fetched(site, src):
    r = _resolve(site, src)
    assert r.image is None and r.problem == paths.REMOTE


def test_site_absolute_paths_need_a_root(site):
    assert "--root" in _resolve(site, "/img/my%20cat.png").problem
    r = _resolve(site, "/img/my%20cat.png", root=str(site))
    assert r.image and r.image.endswith("my cat.png")


@pytest.mark.parametrize("src", ["../../secret.png", "../../../../../../etc/passwd", "/../secret.png"])
def test_references_leaving_the_folder_are_refused(site, src):
    r = _resolve(site, src, root=str(site))
    assert r.image is None
    assert r.problem.startswith("refused") or r.problem == "not found"
    if "secret" in src:
        assert r.problem.startswith("refused") and "outside" in r.problem


def test_a_symlink_pointing_out_is_refused_before_it_is_opened(site):
    os.symlink(site.parent / "secret.png", site / "img" / "link.png")
    r = _resolve(site, "../img/link.png")
    assert r.image is None and r.problem.startswith("refused")


def test_missing_files_are_not_found(site):
    assert _resolve(site, "../img/nope.png").problem == "not found"


def test_data_uris_are_decoded_and_size_capped(site, monkeypatch):
    png = _png()
    r = _resolve(site, "data:image/png;base64," + base64.b64encode(png).decode())
    assert r.image.startswith("data:image/png;sha256=") and paths.image_bytes(r) == png
    r = _resolve(site, "data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'%20width='4'%20height='4'/%3E")
    assert r.image.startswith("data:image/svg+xml")
    monkeypatch.setattr(paths, "MAX_DATA_BYTES", 10)
    r = _resolve(site, "data:image/png;base64," + base64.b64encode(png).decode())
    assert r.image is None and "over" in r.problem


def test_svg_is_rendered_or_reported(site):
    (site / "img" / "d.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
                                        '<rect width="20" height="10" fill="red"/></svg>')
    r = _resolve(site, "../img/d.svg")
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        with pytest.raises(paths.ImageUnavailable, match="SVG not captioned"):
            paths.image_bytes(r)
        return
    im = Image.open(io.BytesIO(paths.image_bytes(r)))
    assert im.size == (20, 10) and im.convert("RGB").getpixel((5, 5))[0] > 200


def test_embedded_pictures_are_named_inside_their_document(site):
    ref = ImageRef(str(site / "a.docx"), {}, "media/image1.png", None, "k", embedded="word/media/image1.png")
    assert paths.resolve(ref, [str(site)]).image == f"{site / 'a.docx'}!/word/media/image1.png"


# ------------------------------------------------------------------ context.py: one test per rule
def _ref(**ctx):
    return ImageRef("doc.md", {}, "x.png", None, "k", context=Context(**ctx))


def test_link_only_says_where_the_link_goes():
    assert rules.link_only(_ref(link_href="a.html", link_title="Home page"), rules.Facts()).alt == "Home page"
    assert rules.link_only(_ref(link_href="getting-started.md"), rules.Facts(target_title="Getting started")).alt \
        == "Getting started"
    assert rules.link_only(_ref(link_href="user-guide/writing-your-docs.md"), rules.Facts()).alt == "Writing your docs"
    assert rules.link_only(_ref(link_href="https://www.github.com/mkdocs"), rules.Facts()).alt == "github.com"
    assert rules.link_only(_ref(link_href="a.html", link_text="Read more"), rules.Facts()) is None
    assert rules.link_only(_ref(link_href="#top"), rules.Facts()) is None
    assert rules.link_only(_ref(), rules.Facts()) is None


def test_spacer_tiny_or_one_colour_is_decorative():
    assert rules.spacer(_ref(width=1, height=1), rules.Facts()).alt == ""
    assert rules.spacer(_ref(), rules.Facts(width=2, height=2)).alt == ""
    assert rules.spacer(_ref(), rules.Facts(width=300, height=200, one_colour=True)).alt == ""
    assert rules.spacer(_ref(), rules.Facts(width=300, height=200)) is None


def test_tiny_unlinked_icons_are_decorative():
    assert rules.tiny_unlinked(_ref(width=16, height=16), rules.Facts()).alt == ""
    assert rules.tiny_unlinked(_ref(), rules.Facts(width=12, height=12)).alt == ""
    assert rules.tiny_unlinked(_ref(width=16, height=16, link_href="a.html"), rules.Facts()) is None
    assert rules.tiny_unlinked(_ref(), rules.Facts(width=17, height=12)) is None


def test_repeated_images_are_the_sites_not_the_pages():
    assert rules.repeated(_ref(), rules.Facts(pages_using=5, pages_total=10)).alt == ""
    assert rules.repeated(_ref(title="ACME"), rules.Facts(pages_using=4, pages_total=4)).alt == "ACME"
    assert rules.repeated(_ref(), rules.Facts(pages_using=4, pages_total=9)) is None
    assert rules.repeated(_ref(), rules.Facts(pages_using=3, pages_total=3)) is None   # too few pages to tell


def test_a_describing_figure_caption_makes_the_image_redundant():
    assert rules.captioned(_ref(figure_caption="The MkDocs live server"), rules.Facts()).alt == ""
    assert rules.captioned(_ref(figure_caption="Figure 3."), rules.Facts()) is None
    assert rules.captioned(_ref(), rules.Facts()) is None


def test_text_beside_that_says_it_all_makes_the_image_redundant():
    near = "A black dog runs through the grass after a ball in the park."
    assert rules.said_nearby(_ref(nearby_text=near), rules.Facts(machine_alt="A black dog runs through the grass.")).alt == ""
    assert rules.said_nearby(_ref(nearby_text=near), rules.Facts(machine_alt="Two children sit on a red bench.")) is None
    assert rules.said_nearby(_ref(nearby_text=near), rules.Facts()) is None


def test_the_rules_are_asked_in_the_decision_trees_order():
    # a tiny icon that is a link's only content is functional, not decorative
    d = rules.decide(_ref(width=16, height=16, link_href="index.md"), rules.Facts(target_title="Home"))
    assert (d.rule, d.alt) == ("link_only", "Home")
    assert rules.decide(_ref(figure_caption="A chart of sales"), rules.Facts(pages_using=9, pages_total=9)).rule == "repeated"
    assert rules.decide(_ref(), rules.Facts(width=640, height=480)) is None


def test_svg_size_is_read_safely_and_a_huge_svg_is_rendered_small():
    assert paths.svg_size(b'<svg xmlns="http://www.w3.org/2000/svg" width="527pt" height="72pt"/>') == (527 * 96 / 72, 96.0)
    assert paths.svg_size(b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 20"/>') == (40.0, 20.0)
    bomb = b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>'
    assert paths.svg_size(bomb) is None                      # defusedxml refuses the DTD
    pytest.importorskip("resvg_py")
    huge = b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="50000"><rect width="9" height="9"/></svg>'
    assert Image.open(io.BytesIO(paths.render_svg(huge, "huge.svg"))).size == (paths.MAX_SVG_SIDE, paths.MAX_SVG_SIDE // 2)
