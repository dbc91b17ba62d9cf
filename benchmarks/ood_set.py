"""Assemble the out-of-domain image set used to measure issue 7's flag, guidance and alt text.

Everything comes from freely licensed files that install offline, or is drawn here:

  * Tux Paint stamps (Debian ``tuxpaint-stamps-default``, GPL-2+ / public domain per its copyright
    file): photos and drawings of animals (dogs and people left out), food, household objects,
    vehicles, clothes, plants, space;
  * scikit-image's sample data (public domain / CC0 per ``skimage/data/README.txt``), scikit-learn's
    two sample photos (CC BY 2.0) and matplotlib's sample photo of Grace Hopper (public domain);
  * charts, application screenshots, text documents and emoji drawings (Noto Color Emoji, OFL,
    Debian ``fonts-noto-color-emoji``) drawn by this script with a fixed seed.

Each image gets a label: its kind, the words that name its main object (from the file name or
the drawing), and whether a person or a dog is in it (the words a caption must not invent).

    apt-get install tuxpaint-stamps-default fonts-noto-color-emoji
    pip install scikit-image scikit-learn
    python benchmarks/ood_set.py --out runs/ood        # writes runs/ood/*.jpg and labels.json
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

STAMPS = Path("/usr/share/tuxpaint/stamps")
STAMP_KINDS = {"animals": "animal", "food": "food", "household": "object", "vehicles": "object",
               "clothes": "object", "plants": "plant", "space": "object", "hobbies": "object",
               "sports": "object", "town": "object", "medical": "object"}
SKIP = ("dogs", "people", "wolf", "fox")  # in-domain animals and any person are not out-of-domain objects
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI = {"cat": "\U0001F408", "cow": "\U0001F404", "pizza": "\U0001F355", "car": "\U0001F697",
         "fish": "\U0001F41F", "apple": "\U0001F34E", "horse": "\U0001F40E", "bird": "\U0001F426",
         "rocket": "\U0001F680", "guitar": "\U0001F3B8", "cake": "\U0001F370", "elephant": "\U0001F418",
         "flower": "\U0001F33C", "house": "\U0001F3E0", "banana": "\U0001F34C", "bicycle": "\U0001F6B2"}
# skimage sample: name -> (kind, main-object words, person, dog)
SKIMAGE = {"chelsea": ("animal", ["cat"], False, False), "coffee": ("food", ["coffee", "cup"], False, False),
           "rocket": ("object", ["rocket"], False, False), "astronaut": ("person", ["astronaut", "woman"], True, False),
           "camera": ("person", ["camera", "man"], True, False), "horse": ("drawing", ["horse"], False, False),
           "coins": ("object", ["coins", "coin"], False, False), "moon": ("object", ["moon"], False, False),
           "page": ("document", ["page", "text"], False, False), "text": ("document", ["text"], False, False),
           "hubble_deep_field": ("object", ["space", "galaxies", "stars"], False, False),
           "retina": ("object", ["retina", "eye"], False, False), "immunohistochemistry": ("object", ["cells"], False, False),
           "brick": ("texture", ["brick", "wall"], False, False), "grass": ("texture", ["grass"], False, False),
           "gravel": ("texture", ["gravel", "stones"], False, False), "logo": ("drawing", ["logo"], False, False),
           "clock": ("object", ["clock"], False, False), "cell": ("object", ["cell"], False, False), "microaneurysms": ("object", ["retina", "eye"], False, False)}


def on_background(im: Image.Image, rng: random.Random, size: int = 400) -> Image.Image:
    """A stamp with transparency pasted on a plain light background, as a product photo."""
    im = im.convert("RGBA")
    im.thumbnail((int(size * 0.85), int(size * 0.85)))
    bg = Image.new("RGB", (size, size), tuple(rng.randint(215, 255) for _ in range(3)))
    bg.paste(im, ((size - im.width) // 2, (size - im.height) // 2), im)
    return bg


def stamp_images(rng: random.Random, per_kind: int):
    by_kind: dict[str, list[Path]] = {}
    for top, kind in STAMP_KINDS.items():
        for p in sorted((STAMPS / top).rglob("*.png")):
            if any(s in p.parts or p.stem.startswith(s) for s in SKIP) or "_mirror" in p.stem:
                continue
            by_kind.setdefault(kind, []).append(p)
    for kind, paths in sorted(by_kind.items()):
        for p in rng.sample(paths, min(per_kind, len(paths))):
            words = [w for w in re.split(r"[_\-\s]+", p.stem.lower()) if w.isalpha() and len(w) > 2]
            yield f"stamp_{kind}_{p.stem}", on_background(Image.open(p), rng), kind, words or [p.parent.name]


def chart(rng: random.Random, i: int) -> Image.Image:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    k = i % 5
    x = np.arange(rng.randint(4, 12))
    y = np.array([rng.uniform(1, 10) for _ in x])
    if k == 0:
        ax.bar(x, y, color=plt.cm.tab10(rng.randint(0, 9)))
    elif k == 1:
        ax.plot(x, np.cumsum(y), marker="o")
        ax.plot(x, np.cumsum(y[::-1]), marker="s")
    elif k == 2:
        ax.pie(y[:5], labels=[f"part {j}" for j in range(min(5, len(y)))])
    elif k == 3:
        pts = np.array([[rng.gauss(0, 1), rng.gauss(0, 1)] for _ in range(80)])
        ax.scatter(pts[:, 0], pts[:, 1], s=10)
    else:
        ax.hist([rng.gauss(0, 1) for _ in range(300)], bins=20)
    ax.set_title(rng.choice(["Sales by quarter", "Revenue", "Results", "Survey answers", "Growth"]))
    fig.tight_layout()
    fig.canvas.draw()
    im = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return im


def screenshot(rng: random.Random, i: int) -> Image.Image:
    """A settings window or a web form: title bar, text rows, toggles and buttons."""
    w, h = 480, 360
    dark = i % 3 == 0
    bg, fg = ((40, 42, 48), (230, 230, 230)) if dark else ((246, 246, 248), (30, 30, 30))
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=15)
    d.rectangle([0, 0, w, 32], fill=(60, 90, 160) if i % 2 else (200, 200, 205))
    d.text((12, 8), rng.choice(["Settings", "Preferences", "Account", "Network", "Display"]), fill=fg, font=font)
    for r in range(rng.randint(5, 8)):
        yy = 50 + r * 38
        d.text((20, yy), rng.choice(["Wi-Fi", "Bluetooth", "Notifications", "Dark mode", "Auto-update",
                                     "Location", "Sync", "Backup", "Language", "Privacy"]), fill=fg, font=font)
        on = rng.random() < 0.5
        d.rounded_rectangle([w - 80, yy, w - 30, yy + 22], 11, fill=(70, 160, 90) if on else (150, 150, 150))
        cx = w - 41 if on else w - 69
        d.ellipse([cx - 9, yy + 2, cx + 9, yy + 20], fill=(255, 255, 255))
        d.line([20, yy + 30, w - 20, yy + 30], fill=(120, 120, 120))
    return im


def document(rng: random.Random, i: int) -> Image.Image:
    im = Image.new("RGB", (420, 560), (252, 252, 250))
    d = ImageDraw.Draw(im)
    words = ("the of report results method data analysis section figure table value system model "
             "study group time first use these however each between during").split()
    y = 30
    d.text((30, y), f"Chapter {i + 1}", fill=(0, 0, 0), font=ImageFont.load_default(size=24))
    y += 50
    font = ImageFont.load_default(size=12)
    while y < 520:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(8, 11)))
        d.text((30, y), line, fill=(20, 20, 20), font=font)
        y += 18 if rng.random() > 0.1 else 34
    return im


def emoji(name: str, char: str) -> Image.Image:
    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # the one size its bitmaps come in
    im = Image.new("RGB", (160, 160), (255, 255, 255))
    ImageDraw.Draw(im).text((16, 16), char, font=font, embedded_color=True)
    return im


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ood", help="folder to write the images and labels.json into")
    ap.add_argument("--per-kind", type=int, default=25, help="Tux Paint stamps sampled per kind")
    ap.add_argument("--seed", type=int, default=0, help="sampling and drawing seed")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = []

    def add(name, im, kind, words, person=False, dog=False):
        fname = f"{name}.jpg"
        k = 2
        while (out / fname).exists() and any(lab["image"] == fname for lab in labels):
            fname, k = f"{name}_{k}.jpg", k + 1   # two stamps of one name in different folders
        im.convert("RGB").save(out / fname, quality=92)
        labels.append({"image": fname, "kind": kind, "objects": words, "person": person, "dog": dog})

    if STAMPS.is_dir():
        for name, im, kind, words in stamp_images(rng, args.per_kind):
            add(name, im, kind, words)
    else:
        print(f"warning: {STAMPS} absent (apt-get install tuxpaint-stamps-default); no stamps")
    import skimage.data

    for name, (kind, words, person, dog) in SKIMAGE.items():
        try:
            arr = getattr(skimage.data, name)()
        except Exception as e:  # a sample not in the wheel needs a download: skip it
            print(f"skipped skimage.data.{name}: {type(e).__name__}")
            continue
        add(f"skimage_{name}", Image.fromarray(arr), kind, words, person, dog)
    from sklearn.datasets import load_sample_image

    add("sklearn_china", Image.fromarray(load_sample_image("china.jpg")), "building", ["temple", "building"])
    add("sklearn_flower", Image.fromarray(load_sample_image("flower.jpg")), "plant", ["flower"])
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        add("mpl_grace_hopper", Image.open(f), "person", ["woman", "officer", "uniform"], True)
    for i in range(20):
        add(f"chart_{i}", chart(rng, i), "chart", ["chart", "graph"])
    for i in range(15):
        add(f"screenshot_{i}", screenshot(rng, i), "screenshot", ["screenshot", "screen"])
    for i in range(10):
        add(f"document_{i}", document(rng, i), "document", ["document", "text", "page"])
    if EMOJI_FONT.is_file():
        for name, char in EMOJI.items():
            add(f"emoji_{name}", emoji(name, char), "drawing", [name])
    (out / "labels.json").write_text(json.dumps(labels, indent=1))
    kinds = {}
    for lab in labels:
        kinds[lab["kind"]] = kinds.get(lab["kind"], 0) + 1
    print(f"wrote {len(labels)} images to {out}: {kinds}")


if __name__ == "__main__":
    main()
