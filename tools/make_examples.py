"""Draw the four non-photo examples that ship in ``src/captioner/examples/`` (the README's examples of
each kind, and the app's gallery): a bar chart (matplotlib), an application screenshot (headless
Chromium), a document page (PIL, in matplotlib's DejaVu Serif) and a drawing (Noto Color Emoji).
Everything in them is written here, so they are CC0 like the project's other drawn images; the emoji
glyph is under the OFL (``fonts-noto-color-emoji``).  None of them is in the kind classifier's
labelled set (``tools/kind_dataset.py``).

    apt-get install chromium fonts-noto-color-emoji
    python tools/make_examples.py --out src/captioner/examples
"""
from __future__ import annotations

import argparse
import io
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SCREEN = """<html><body style="margin:0;font-family:'DejaVu Sans',sans-serif;background:#f3f4f7;color:#1f2328">
<header style="background:#0b6e4f;color:white;padding:14px 24px;font-size:20px">Riverside Library</header>
<div style="display:flex"><ul style="list-style:none;width:190px;padding:16px;margin:0;background:white;min-height:640px;font-size:15px;line-height:2.3">
<li>Catalogue</li><li>My loans</li><li>Reservations</li><li>Events</li><li>Help</li></ul>
<main style="padding:28px"><h1 style="font-size:28px">Renew your loans</h1>
<table style="background:white;border-collapse:collapse;font-size:15px">
<tr><th style="padding:10px;text-align:left">Title</th><th style="padding:10px;text-align:left">Due</th></tr>
<tr><td style="padding:10px">The Wind in the Willows</td><td style="padding:10px">12 March</td></tr>
<tr><td style="padding:10px">A Brief History of Time</td><td style="padding:10px">19 March</td></tr>
<tr><td style="padding:10px">Birds of Britain</td><td style="padding:10px">2 April</td></tr></table>
<button style="margin-top:20px;background:#0b6e4f;color:white;border:0;padding:11px 22px;border-radius:6px;font-size:15px">Renew all</button>
</main></div></body></html>"""

PAGE_TITLE = "Caring for your bicycle"
PAGE = ("A bicycle that is looked after lasts for decades. Keep the chain clean and lightly oiled, check the "
        "tyre pressure every week and replace brake pads before they wear through. Store the bicycle indoors "
        "when you can, away from rain and frost, and have the wheels trued once a year.")


def chart(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.bar(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], [120, 135, 128, 160, 210, 340, 290], color="#3a7ca5")
    ax.set_title("Visitors to the museum per day")
    ax.set_xlabel("Day of the week")
    ax.set_ylabel("Visitors")
    fig.tight_layout()
    fig.savefig(out / "chart.png")
    plt.close(fig)


def screenshot(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1024, "height": 640})
        page.set_content(SCREEN)
        im = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        browser.close()
    im.quantize(256).convert("RGB").save(out / "screenshot.png", optimize=True)


def document(out: Path) -> None:
    import matplotlib

    serif = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSerif.ttf")
    im = Image.new("RGB", (850, 1100), "white")
    d = ImageDraw.Draw(im)
    d.text((80, 80), PAGE_TITLE, fill="black", font=ImageFont.truetype(serif, 34))
    f = ImageFont.truetype(serif, 18)
    y = 160
    for _ in range(3):
        for line in textwrap.wrap(PAGE, 72):
            d.text((80, y), line, fill="#111", font=f)
            y += 28
        y += 20
    im.convert("L").save(out / "document.png", optimize=True)


def drawing(out: Path) -> None:
    font = ImageFont.truetype("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf", 109)
    im = Image.new("RGB", (136, 128), "white")
    ImageDraw.Draw(im).text((0, 0), "\U0001F98A", font=font, embedded_color=True)   # fox face
    im.resize((340, 320), Image.LANCZOS).save(out / "drawing.png", optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="src/captioner/examples", help="folder to write the four PNGs into")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    for make in (chart, screenshot, document, drawing):
        make(out)
    print(f"wrote chart.png, screenshot.png, document.png, drawing.png into {out}")


if __name__ == "__main__":
    main()
