"""How often the shipped model names the wrong gender, on Flickr8k's test photos.

    python benchmarks/bench_gender.py --data ../shared/flickr8k --out runs/gender.json

A photo counts as showing women or girls when at least one of its five human captions uses a female
word (woman, girl, lady, she, her, ...) and none uses a male one, and as showing men or boys the other
way round; the photos whose captions name both or neither are left out.  Each photo is captioned as
the product does by default (beam 3), and the caption is sorted the same way: a male word, a female
word, both, or neither.  The human captions decide, not the photo: they are what the model was
scored against, and crowd workers guessed gender too.  Test split only; nothing is fitted.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from captioner.api import Captioner
from captioner.training.data import load_dataset, tokenize
from captioner.wording import NEUTRAL

# The gendered words of wording.NEUTRAL, by the gender they name (the neutral map itself does not say).
FEMALE = frozenset({"woman", "women", "girl", "girls", "lady", "ladies", "female", "females", "daughter",
                    "daughters", "mother", "mom", "mothers", "sister", "sisters", "wife", "grandmother",
                    "she", "her", "hers", "herself", "businesswoman", "cowgirl", "girlfriend"})
MALE = frozenset(NEUTRAL) - FEMALE


def gender_of(words) -> str:
    """'female', 'male', 'both' or 'neither' for one tokenised sentence (or several, joined)."""
    f, m = bool(FEMALE & set(words)), bool(MALE & set(words))
    return "both" if f and m else "female" if f else "male" if m else "neither"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the Flickr8k folder (research use only; not shipped)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default=None, help="model file; default: the shipped model")
    ap.add_argument("--out", default=None, help="write the counts and every sorted caption as JSON here")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    names = ds.images(args.split)
    refs = {n: sorted({gender_of(tokenize(c)) for c in ds.captions[n]} - {"neither"}) for n in names}
    shown = {n: r[0] for n, r in refs.items() if r in (["female"], ["male"])}
    cap = Captioner(args.model, read_text="never")
    rows, table = [], {"female": Counter(), "male": Counter()}
    for path, res in cap.caption_paths([ds.image_dir / n for n in shown], 32):
        name = Path(path).name
        said = gender_of(tokenize(res.text))
        table[shown[name]][said] += 1
        rows.append({"image": name, "references": shown[name], "caption": res.text, "caption_says": said})
    print(f"{args.split} split: {len(names)} photos; {len(shown)} whose human captions name one gender only")
    print("| human captions name | photos | caption names a man/boy | a woman/girl | both | neither |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g, label in (("female", "women or girls only"), ("male", "men or boys only")):
        c, n = table[g], sum(table[g].values())
        cells = [f"{c[k]} ({100 * c[k] / max(n, 1):.1f} %)" for k in ("male", "female", "both", "neither")]
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"counts": {k: dict(v) for k, v in table.items()}, "captions": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
