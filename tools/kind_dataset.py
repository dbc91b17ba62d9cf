"""Build the labelled image set the kind classifier (``captioner/kind.py``) is trained and measured on.

Every image is freely licensed and installs offline, or is drawn here with a fixed seed. The two
splits come from *different sources*, so the held-out figures say how the classifier does on
images unlike the ones it learned from:

| kind       | train (fitting and every choice)                                  | held-out (reported only)                                        |
| ---------- | ----------------------------------------------------------------- | --------------------------------------------------------------- |
| photo      | Flickr8k train split (``../shared/flickr8k``, research use)        | scikit-image sample photos (CC0 / public domain), scikit-learn's two (CC BY 2.0), matplotlib's Grace Hopper (public domain) |
| drawing    | Tux Paint stamps (Debian ``tuxpaint-stamps-default``, GPL-2+/PD: drawings and cut-out clip art) pasted on a light background | Noto Color Emoji (OFL, ``fonts-noto-color-emoji``) drawn large; scikit-image's logo and horse silhouette |
| screenshot | application pages of family A (sign-in forms, settings, dashboards, tables) written here and rendered in headless Chromium | family B (mail inbox, shop product page, code editor, chat, file manager), other fonts and colours, Chromium |
| document   | article pages from Python's standard-library docstrings rendered in Chromium (HTML headings, paragraphs, lists) | the licence texts in ``/usr/share/common-licenses`` typeset here with PIL in other fonts; scikit-image's ``page`` and ``text`` |
| chart      | matplotlib bar, line, pie and scatter charts in the styles default, ggplot, seaborn-v0_8-whitegrid and classic | pygal's SVG charts (another library) rendered in Chromium, and matplotlib in styles unused in training (fivethirtyeight, dark_background, bmh, Solarize_Light2) |

Each image gets a record in ``OUT/manifest.jsonl``: ``path`` (relative to OUT), ``split``, ``kind``,
``subtype`` (bar/line/pie/scatter for charts), ``source`` and ``words``: the words drawn into it
(``None`` where unknown, e.g. the photos), for measuring what the text reader reads; ``key``: the
words a good alt text holds (a chart's or page's title, a screenshot's heading).

    apt-get install chromium tuxpaint-stamps-default fonts-noto-color-emoji fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf
    pip install -e ".[test]" pygal scikit-image scikit-learn
    python tools/kind_dataset.py --out runs/kinds          # about 6 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import html
import inspect
import json
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FLICKR = Path(__file__).resolve().parents[1].parent / "shared" / "flickr8k"
STAMPS = Path("/usr/share/tuxpaint/stamps")
LICENSES = Path("/usr/share/common-licenses")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_DIRS = [Path("/usr/share/fonts/truetype")]
CHART_TYPES = ("bar", "line", "pie", "scatter")
TRAIN_STYLES = ("default", "ggplot", "seaborn-v0_8-whitegrid", "classic")
HELDOUT_STYLES = ("fivethirtyeight", "dark_background", "bmh", "Solarize_Light2")

TOPICS = ["Monthly active users by region", "Revenue per quarter", "Average rainfall in Lisbon",
          "Downloads per release", "Support tickets by category", "Energy use by source",
          "Visitors to the museum", "Test scores by class", "Train delays per line", "Bird counts by species",
          "Server response time", "Book loans per branch", "Solar output per month", "Sales by product",
          "Temperature in Oslo", "Commute time by city", "Exam pass rate", "Website traffic sources",
          "Coffee consumption by country", "Population growth", "Bug reports per week", "Hours of sunshine"]
CATS = ["North", "South", "East", "West", "Central", "Apples", "Pears", "Plums", "Alpha", "Beta", "Gamma",
        "Delta", "Email", "Search", "Social", "Direct", "Wind", "Solar", "Hydro", "Coal", "Gas", "Nuclear"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
APPS = ["Northwind Bank", "Acme Cloud", "Bluebird Mail", "Greenleaf CRM", "Orbit Analytics", "Harbor HR",
        "Pinecone Notes", "Summit Travel", "Lumen Billing", "Atlas Maps", "Cobalt Admin", "Maple Health"]
UI_WORDS = ["Dashboard", "Settings", "Profile", "Reports", "Messages", "Projects", "Invoices", "Customers",
            "Calendar", "Files", "Billing", "Security", "Notifications", "Team", "Help", "Orders", "Analytics"]
FIELDS = ["Email address", "Password", "Full name", "Phone number", "Company", "Username", "Street address",
          "City", "Postal code", "Card number", "Display name", "Time zone", "Language"]
BUTTONS = ["Sign in", "Save changes", "Continue", "Create account", "Cancel", "Submit", "Export", "Delete",
           "Add new", "Apply", "Next", "Log out"]
PEOPLE = ["Ana Silva", "Ben Carter", "Chen Wei", "Dara Okafor", "Emil Novak", "Farah Khan", "Greta Lind",
          "Hugo Martin", "Ines Duarte", "Jonas Berg", "Kemal Aydin", "Lena Fischer"]
SUBJECTS = ["Quarterly report draft", "Lunch on Friday?", "Your invoice is ready", "Meeting notes",
            "Flight confirmation", "Password reset", "Welcome to the team", "Holiday schedule",
            "Project kickoff", "Re: budget review", "Weekly digest", "Order shipped"]
PRODUCTS = ["Trail Running Shoes", "Ceramic Coffee Mug", "Wireless Headphones", "Wool Winter Scarf",
            "Stainless Water Bottle", "Leather Notebook", "Desk Lamp", "Travel Backpack"]


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


# ----------------------------------------------------------------------------- fonts


def fonts(pattern: str) -> list[Path]:
    return sorted(p for d in FONT_DIRS for p in d.rglob("*.ttf") if re.search(pattern, p.name))


# ----------------------------------------------------------------------------- photos and drawings


def flickr_photos(n: int, rng: random.Random):
    names = (FLICKR / "Flickr8k_text" / "Flickr_8k.trainImages.txt").read_text().split()
    for name in rng.sample(names, n):
        yield Image.open(FLICKR / "Images" / name).convert("RGB"), {"source": f"flickr8k-train:{name}"}


def sample_photos():
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    # the photographs scikit-image's wheel carries (others would be downloaded on first use)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "hubble_deep_field",
                 "retina", "brick", "grass", "gravel", "immunohistochemistry", "cat", "microaneurysms"):
        try:
            a = getattr(skimage.data, name)()
        except Exception:
            continue
        a = np.asarray(a)
        if a.ndim == 3 and a.shape[-1] > 3:
            a = a[..., :3]
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / max(float(a.max() - a.min()), 1e-9)).astype(np.uint8)
        yield Image.fromarray(a).convert("RGB"), {"source": f"skimage:{name}"}
    ds = load_sample_images()
    for fname, a in zip(ds.filenames, ds.images):
        yield Image.fromarray(a).convert("RGB"), {"source": f"sklearn:{Path(fname).name}"}
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        yield Image.open(f).convert("RGB"), {"source": "matplotlib:grace_hopper.jpg"}


def stamps(n: int, rng: random.Random):
    files = sorted(STAMPS.rglob("*.png"))
    for p in rng.sample(files, min(n, len(files))):
        im = Image.open(p).convert("RGBA")
        im.thumbnail((340, 340))
        bg = Image.new("RGB", (400, 400), tuple(rng.randint(225, 255) for _ in range(3)))
        bg.paste(im, ((400 - im.width) // 2, (400 - im.height) // 2), im)
        yield bg, {"source": f"tuxpaint:{p.relative_to(STAMPS)}"}


def emoji(rng: random.Random):
    import unicodedata

    font = ImageFont.truetype(str(EMOJI_FONT), 109)   # the one size this bitmap font has
    chars = [chr(c) for c in list(range(0x1F400, 0x1F4FF)) + list(range(0x1F330, 0x1F37F))]
    for ch in rng.sample(chars, 60):
        im = Image.new("RGB", (136, 128), "white")
        try:
            ImageDraw.Draw(im).text((0, 0), ch, font=font, embedded_color=True)
        except Exception:
            continue
        if np.asarray(im).min() > 250:      # no glyph
            continue
        im = im.resize((384, 362), Image.LANCZOS)
        yield im, {"source": f"noto-emoji:{unicodedata.name(ch, hex(ord(ch)))}"}


def skimage_drawings():
    import skimage.data

    for name in ("logo", "horse"):
        a = np.asarray(getattr(skimage.data, name)())
        if a.dtype == bool:
            a = np.where(a, 0, 255).astype(np.uint8)
        im = Image.fromarray(a)
        if im.mode == "RGBA":
            bg = Image.new("RGB", im.size, "white")
            bg.paste(im, mask=im.split()[-1])
            im = bg
        yield im.convert("RGB"), {"source": f"skimage:{name}"}


def skimage_pages():
    import skimage.data

    for name in ("page", "text"):
        yield Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB"), {"source": f"skimage:{name}"}


# ----------------------------------------------------------------------------- charts


def _series(rng, kind):
    n = rng.randint(4, 8)
    if kind == "line":
        cats = MONTHS[:rng.randint(6, 12)]
    else:
        cats = rng.sample(CATS, n)
    return cats, [round(rng.uniform(5, 100), 0) for _ in cats]


def mpl_chart(kind: str, style: str, rng: random.Random) -> tuple[Image.Image, dict]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = rng.choice(TOPICS)
    cats, vals = _series(rng, kind)
    xlabel, ylabel = rng.choice([("Region", "Users (thousands)"), ("Month", "Value"), ("Category", "Count"),
                                 ("Week", "Reports"), ("Year", "Percent")])
    drawn = [title]
    with plt.style.context(style):
        fig, ax = plt.subplots(figsize=(rng.choice([6.4, 8, 7]), rng.choice([4.8, 5, 4.5])), dpi=100)
        if kind == "bar":
            if rng.random() < 0.3:
                ax.barh(cats, vals)
            else:
                ax.bar(cats, vals)
            drawn += cats + [xlabel, ylabel]
        elif kind == "line":
            for k in range(rng.randint(1, 3)):
                ax.plot(cats, [v * rng.uniform(0.6, 1.4) for v in vals], marker=rng.choice(["o", "", "s"]),
                        label=f"Series {k + 1}" if k or rng.random() < 0.5 else None)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
            drawn += cats + [xlabel, ylabel]
        elif kind == "pie":
            ax.pie(vals[:5], labels=cats[:5], autopct="%1.0f%%" if rng.random() < 0.6 else None)
            drawn += cats[:5]
            xlabel = ylabel = None
        else:
            x = np.array([rng.gauss(50, 15) for _ in range(rng.randint(30, 120))])
            ax.scatter(x, x * rng.uniform(0.5, 2) + np.array([rng.gauss(0, 12) for _ in x]), s=rng.choice([8, 20, 40]))
            xlabel, ylabel = rng.choice([("Height (cm)", "Weight (kg)"), ("Price", "Rating"), ("Age", "Income")])
            drawn += [xlabel, ylabel]
        if xlabel:
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    return Image.open(buf).convert("RGB"), {"subtype": kind, "source": f"matplotlib:{style}",
                                            "words": [w for t in drawn for w in words(t)], "key": words(title)}


def pygal_svg(kind: str, rng: random.Random) -> tuple[str, dict]:
    import pygal
    from pygal.style import DefaultStyle, LightColorizedStyle, CleanStyle, NeonStyle

    style = rng.choice([DefaultStyle, LightColorizedStyle, CleanStyle, NeonStyle])
    title = rng.choice(TOPICS)
    cats, vals = _series(rng, kind)
    cfg = dict(title=title, style=style, width=800, height=500, show_legend=True)
    if kind == "bar":
        ch = pygal.Bar(**cfg)
        ch.x_labels = cats
        ch.add("2025", vals)
        drawn = [title] + cats + ["2025"]
    elif kind == "line":
        ch = pygal.Line(**cfg)
        ch.x_labels = cats
        ch.add("Actual", vals)
        ch.add("Target", [v * 0.9 for v in vals])
        drawn = [title] + cats + ["Actual", "Target"]
    elif kind == "pie":
        ch = pygal.Pie(**cfg)
        for c, v in zip(cats[:5], vals):
            ch.add(c, v)
        drawn = [title] + cats[:5]
    else:
        ch = pygal.XY(stroke=False, **cfg)
        ch.add("Samples", [(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(60)])
        drawn = [title, "Samples"]
    return ch.render(is_unicode=True), {"subtype": kind, "source": f"pygal:{style.__name__}",
                                        "words": [w for t in drawn for w in words(t)], "key": words(title)}


# ----------------------------------------------------------------------------- pages for Chromium


def _esc(s):
    return html.escape(s)


def screen_a(rng: random.Random) -> tuple[str, dict, tuple]:
    """Family A: sign-in forms, settings, dashboards, tables."""
    app = rng.choice(APPS)
    accent = rng.choice(["#1a73e8", "#0b8043", "#8e24aa", "#d93025", "#00796b", "#3949ab"])
    font = rng.choice(["DejaVu Sans", "Liberation Sans", "FreeSans"])
    layout = rng.choice(["signin", "settings", "dashboard", "table"])
    menu = rng.sample(UI_WORDS, 6)
    drawn = [app] + menu
    nav = "".join(f"<li>{_esc(m)}</li>" for m in menu)
    if layout == "signin":
        heading = f"Sign in to {app}"
        flds = rng.sample(FIELDS, 2)
        body = f"<div class='card'><h1>{_esc(heading)}</h1>" + "".join(
            f"<label>{_esc(f)}</label><input value=''>" for f in flds) + \
            f"<button>{_esc(rng.choice(BUTTONS))}</button><p class='small'>Forgot your password?</p></div>"
        drawn += [heading] + flds + ["Forgot your password"]
        sidebar = ""
    elif layout == "settings":
        heading = rng.choice(["Account settings", "Profile settings", "Notification preferences", "Security"])
        flds = rng.sample(FIELDS, 4)
        body = f"<h1>{_esc(heading)}</h1>" + "".join(
            f"<div class='row'><label>{_esc(f)}</label><input value='{_esc(rng.choice(PEOPLE))}'></div>" for f in flds) + \
            "<button>Save changes</button>"
        drawn += [heading] + flds + ["Save changes"]
        sidebar = f"<ul class='side'>{nav}</ul>"
    elif layout == "dashboard":
        heading = rng.choice(["Overview", "Dashboard", "This week", "Analytics"])
        metrics = [(rng.choice(["Revenue", "Users", "Orders", "Sessions", "Tickets", "Uptime"]),
                    f"{rng.randint(10, 9999):,}") for _ in range(4)]
        body = f"<h1>{_esc(heading)}</h1><div class='grid'>" + "".join(
            f"<div class='metric'><div class='small'>{_esc(k)}</div><div class='big'>{_esc(v)}</div></div>"
            for k, v in metrics) + "</div>"
        drawn += [heading] + [w for k, v in metrics for w in (k, v)]
        sidebar = f"<ul class='side'>{nav}</ul>"
    else:
        heading = rng.choice(["Customers", "Invoices", "Orders", "Team members"])
        rows = "".join(f"<tr><td>{_esc(p)}</td><td>{rng.randint(100, 999)}</td><td>{rng.choice(['Paid', 'Open', 'Overdue'])}</td></tr>"
                       for p in rng.sample(PEOPLE, 6))
        body = f"<h1>{_esc(heading)}</h1><table><tr><th>Name</th><th>Number</th><th>Status</th></tr>{rows}</table>"
        drawn += [heading, "Name", "Number", "Status"]
        sidebar = f"<ul class='side'>{nav}</ul>"
    css = f"""body{{margin:0;font-family:'{font}';background:#f5f6f8;color:#202124}}
header{{background:{accent};color:white;padding:14px 24px;font-size:20px}} .wrap{{display:flex}}
.side{{list-style:none;width:200px;padding:16px;margin:0;background:white;min-height:700px}} .side li{{padding:9px 4px;font-size:15px}}
main{{padding:28px;flex:1}} h1{{font-size:28px;font-weight:600}} .card{{background:white;width:380px;margin:60px auto;padding:32px;border-radius:10px;box-shadow:0 2px 8px #0002}}
label{{display:block;margin:14px 0 4px;font-size:14px}} input{{width:90%;padding:9px;border:1px solid #bbb;border-radius:5px;font-size:15px}}
button{{margin-top:20px;background:{accent};color:white;border:0;padding:11px 22px;border-radius:6px;font-size:15px}}
.small{{font-size:13px;color:#666}} .grid{{display:grid;grid-template-columns:repeat(2,1fr);gap:16px}}
.metric{{background:white;padding:20px;border-radius:8px}} .big{{font-size:34px;font-weight:700}}
table{{background:white;border-collapse:collapse;width:90%}} td,th{{padding:10px;border-bottom:1px solid #ddd;text-align:left;font-size:15px}}
.row{{margin-bottom:6px}}"""
    page = f"<html><head><style>{css}</style></head><body><header>{_esc(app)}</header><div class='wrap'>{sidebar}<main>{body}</main></div></body></html>"
    if layout == "signin":
        page = page.replace("<ul class='side'></ul>", "")
    size = rng.choice([(1280, 800), (1024, 768), (1366, 768)])
    return page, {"source": f"chromium:screen-a-{layout}", "words": [w for t in drawn for w in words(t)],
                  "key": words(heading)}, size


def screen_b(rng: random.Random) -> tuple[str, dict, tuple]:
    """Family B: mail inbox, product page, code editor, chat, file manager."""
    layout = rng.choice(["inbox", "product", "editor", "chat", "files"])
    font = rng.choice(["DejaVu Serif", "FreeSerif", "Liberation Mono", "DejaVu Sans Mono", "Liberation Serif"])
    dark = layout in ("editor",) or rng.random() < 0.25
    bg, fg = ("#1e1e1e", "#d4d4d4") if dark else ("#ffffff", "#1b1b1b")
    if layout == "inbox":
        heading = "Inbox"
        items = [(rng.choice(PEOPLE), s) for s in rng.sample(SUBJECTS, 7)]
        body = f"<h2>{heading}</h2>" + "".join(f"<div class='item'><b>{_esc(p)}</b> &nbsp; {_esc(s)}</div>" for p, s in items)
        drawn = [heading] + [w for p, s in items for w in (p, s)]
    elif layout == "product":
        heading = rng.choice(PRODUCTS)
        price = f"${rng.randint(9, 199)}.99"
        body = (f"<div style='display:flex;gap:30px'><div style='width:380px;height:380px;background:linear-gradient(135deg,#c9d6ff,#e2e2e2)'></div>"
                f"<div><h2>{_esc(heading)}</h2><p class='price'>{price}</p><p>Free delivery on orders over $50</p>"
                f"<button>Add to cart</button></div></div>")
        drawn = [heading, price, "Free delivery on orders over 50", "Add to cart"]
    elif layout == "editor":
        heading = rng.choice(["main.py", "server.js", "utils.go", "index.html"])
        src = inspect.getsource(rng.choice([json_dumps_src, html.escape, re.escape])).splitlines()[:22]
        body = f"<div class='tab'>{heading}</div><pre>" + "\n".join(_esc(l) for l in src) + "</pre>"
        drawn = [heading] + [w for l in src for w in words(l)]
    elif layout == "chat":
        heading = rng.choice(["Team chat", "# general", "Support", "Family group"])
        msgs = [(rng.choice(PEOPLE), rng.choice(SUBJECTS)) for _ in range(6)]
        body = f"<h2>{_esc(heading)}</h2>" + "".join(
            f"<div class='bubble'><small>{_esc(p)}</small><br>{_esc(m)}</div>" for p, m in msgs)
        drawn = [heading] + [w for p, m in msgs for w in (p, m)]
    else:
        heading = rng.choice(["Documents", "Downloads", "Pictures", "Music"])
        files = [f"{rng.choice(['report', 'notes', 'invoice', 'photo', 'budget', 'draft'])}_{rng.randint(1, 99)}.{rng.choice(['pdf', 'txt', 'jpg', 'xlsx'])}"
                 for _ in range(9)]
        body = f"<h2>{heading}</h2><div class='files'>" + "".join(f"<div class='f'>📄<br>{_esc(f)}</div>" for f in files) + "</div>"
        drawn = [heading] + files
    css = f"""body{{margin:0;padding:24px 36px;font-family:'{font}';background:{bg};color:{fg}}}
h2{{font-size:26px}} .item{{padding:12px;border-bottom:1px solid #8884;font-size:16px}} .price{{font-size:30px;color:#b12704}}
button{{background:#ffd814;border:1px solid #fcd200;padding:10px 28px;border-radius:18px;font-size:15px}}
pre{{font-size:15px;line-height:1.45}} .tab{{background:#2d2d2d;color:#fff;display:inline-block;padding:6px 14px}}
.bubble{{background:{'#333' if dark else '#e7f3ff'};margin:10px 0;padding:10px 14px;border-radius:14px;width:60%;font-size:15px}}
.files{{display:grid;grid-template-columns:repeat(5,160px);gap:20px}} .f{{text-align:center;font-size:14px}}"""
    page = f"<html><head><style>{css}</style></head><body>{body}</body></html>"
    size = rng.choice([(1280, 720), (1440, 900), (1200, 800)])
    return page, {"source": f"chromium:screen-b-{layout}", "words": [w for t in drawn for w in words(t)],
                  "key": words(heading)}, size


def json_dumps_src(obj):   # a small function whose source the editor screenshots show
    import json as _json

    return _json.dumps(obj, indent=2, sort_keys=True)


def _docstrings(rng: random.Random) -> list[tuple[str, str]]:
    import importlib

    out = []
    for name in ("json", "csv", "argparse", "pathlib", "random", "statistics", "textwrap", "difflib", "heapq",
                 "bisect", "fractions", "decimal", "calendar", "shutil", "tempfile", "logging", "string", "zipfile",
                 "tarfile", "sqlite3", "unittest", "doctest", "pickle", "email", "http", "urllib", "socket",
                 "threading", "queue", "sched", "contextlib", "functools", "itertools", "operator", "collections"):
        try:
            doc = importlib.import_module(name).__doc__ or ""
        except Exception:
            continue
        paras = [" ".join(p.split()) for p in doc.split("\n\n") if len(p.split()) > 8]
        if paras:
            out.append((f"The {name} module", paras))
    return out


def document_a(rng: random.Random, docs) -> tuple[str, dict, tuple]:
    title, paras = rng.choice(docs)
    while sum(len(p) for p in paras) < 1500:   # fill the page with the next modules' text
        paras = paras + rng.choice(docs)[1]
    font = rng.choice(["DejaVu Serif", "Liberation Serif", "DejaVu Sans", "FreeSerif"])
    sub = rng.choice(["Overview", "Introduction", "Usage", "Background", "Summary"])
    body = f"<h1>{_esc(title)}</h1><h3>{sub}</h3>" + "".join(f"<p>{_esc(p)}</p>" for p in paras[:6])
    if rng.random() < 0.4:
        body += "<ul>" + "".join(f"<li>{_esc(w)}</li>" for w in rng.sample(UI_WORDS, 4)) + "</ul>"
    css = f"body{{font-family:'{font}';margin:70px 80px;font-size:{rng.choice([15, 16, 17, 18])}px;line-height:1.5;background:white;color:#111}} h1{{font-size:30px}}"
    text = " ".join([title, sub] + paras[:6])
    return (f"<html><head><style>{css}</style></head><body>{body}</body></html>",
            {"source": f"chromium:docstring:{title.split()[1]}", "words": words(text), "key": words(title)},
            (850, 1100))


def document_b(rng: random.Random) -> tuple[Image.Image, dict]:
    """A licence text typeset with PIL: another renderer, other fonts, other words."""
    lic = rng.choice(sorted(p for p in LICENSES.iterdir() if p.is_file()))
    lines = [l.strip() for l in lic.read_text(errors="replace").splitlines()]
    start = rng.randint(0, max(len(lines) - 60, 0))
    paras, cur = [], []
    for l in lines[start:start + 80]:
        if l:
            cur.append(l)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    title = lic.name.replace("-", " ") + " licence"
    fnt = rng.choice(fonts(r"^(FreeSerif|LiberationSerif-Regular|DejaVuSerif|LiberationSans-Regular|FreeSans)\.ttf$")
                     or fonts(r"^DejaVuSans\.ttf$"))
    size = rng.choice([15, 16, 18])
    W, H = 850, 1100
    im = Image.new("RGB", (W, H), rng.choice(["white", "#fdfcf7", "#f7f7f7"]))
    d = ImageDraw.Draw(im)
    tf = ImageFont.truetype(str(fnt), 30)
    f = ImageFont.truetype(str(fnt), size)
    y = 70
    d.text((80, y), title, fill="black", font=tf)
    y += 60
    drawn = [title]
    import textwrap

    for p in paras:
        for line in textwrap.wrap(p, width=int(690 / (size * 0.5))):
            if y > H - 80:
                break
            d.text((80, y), line, fill="#111", font=f)
            drawn.append(line)
            y += int(size * 1.5)
        y += size
    return im, {"source": f"pil:license:{lic.name}:{fnt.name}", "words": [w for t in drawn for w in words(t)],
                "key": words(title)}


# ----------------------------------------------------------------------------- assembling


class Writer:
    def __init__(self, out: Path):
        self.out, self.n = out, 0
        self.manifest = open(out / "manifest.jsonl", "w")

    def add(self, im: Image.Image, split: str, kind: str, info: dict) -> None:
        folder = self.out / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.n:05d}.png"
        im.save(path)
        self.n += 1
        rec = {"path": str(path.relative_to(self.out)), "split": split, "kind": kind, "subtype": info.get("subtype"),
               "source": info["source"], "words": info.get("words"), "key": info.get("key")}
        self.manifest.write(json.dumps(rec) + "\n")
        self.manifest.flush()


def render_pages(pages, w: Writer, split: str, kind: str) -> None:
    """(html, info, (width, height)) -> screenshots from one headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()
        import io

        for content, info, size in pages:
            page.set_viewport_size({"width": size[0], "height": size[1]})
            page.set_content(content)
            w.add(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), split, kind, info)
        browser.close()


def svg_page(svg: str) -> str:
    return f"<html><body style='margin:0;background:white'>{svg}</body></html>"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write (train/, heldout/, manifest.jsonl)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of every choice")
    ap.add_argument("--n-photos", type=int, default=400, help="Flickr8k train photos")
    ap.add_argument("--n-drawings", type=int, default=400, help="Tux Paint stamps")
    ap.add_argument("--n-screens", type=int, default=240, help="training screenshots (family A)")
    ap.add_argument("--n-documents", type=int, default=200, help="training documents (docstring pages)")
    ap.add_argument("--n-charts", type=int, default=60, help="training charts per chart type")
    ap.add_argument("--n-heldout", type=int, default=40, help="held-out images per kind from the drawn sources")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out)
    # train
    for im, info in flickr_photos(args.n_photos, rng):
        w.add(im, "train", "photo", info)
    for im, info in stamps(args.n_drawings, rng):
        w.add(im, "train", "drawing", info)
    for kind in CHART_TYPES:
        for i in range(args.n_charts):
            im, info = mpl_chart(kind, TRAIN_STYLES[i % len(TRAIN_STYLES)], rng)
            w.add(im, "train", "chart", info)
    render_pages([screen_a(rng) for _ in range(args.n_screens)], w, "train", "screenshot")
    docs = _docstrings(rng)
    render_pages([document_a(rng, docs) for _ in range(args.n_documents)], w, "train", "document")
    # held-out: other sources
    for im, info in sample_photos():
        w.add(im, "heldout", "photo", info)
    for im, info in list(emoji(rng))[:args.n_heldout]:
        w.add(im, "heldout", "drawing", info)
    for im, info in skimage_drawings():
        w.add(im, "heldout", "drawing", info)
    render_pages([screen_b(rng) for _ in range(args.n_heldout)], w, "heldout", "screenshot")
    for _ in range(args.n_heldout):
        im, info = document_b(rng)
        w.add(im, "heldout", "document", info)
    for im, info in skimage_pages():
        w.add(im, "heldout", "document", info)
    pages = []
    for i in range(args.n_heldout // 2):
        kind = CHART_TYPES[i % 4]
        svg, info = pygal_svg(kind, rng)
        pages.append((svg_page(svg), info, (800, 500)))
    render_pages(pages, w, "heldout", "chart")
    for i in range(args.n_heldout // 2):
        im, info = mpl_chart(CHART_TYPES[i % 4], HELDOUT_STYLES[(i // 4) % len(HELDOUT_STYLES)], rng)
        w.add(im, "heldout", "chart", info)
    print(f"{w.n} images in {out} (manifest.jsonl)")


if __name__ == "__main__":
    main()
