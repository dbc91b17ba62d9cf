"""Build ``src/captioner/assets/imagenet_classes.json``: for each of ImageNet's 1,000 classes its
WordNet id, a readable name, and the single words that may name it in a caption, from the class's
own lemmas up its WordNet hypernyms (Egyptian cat -> domestic cat -> cat; espresso -> coffee).

Run once by a maintainer; the JSON is committed, so the package never needs WordNet at run time.

    apt-get install wordnet-base wordnet-sense-index     # WordNet 3.0, the version ImageNet's ids use
    pip install nltk
    python tools/imagenet_words.py [--wordnet /usr/share/wordnet]

nltk reads WordNet only from its own data folders, so the Debian files are copied into
``~/nltk_data/corpora/wordnet`` first (with the ``lexnames`` table nltk expects, from the
Debian man page lexnames(5WN)).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
from collections import deque
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "captioner" / "assets" / "imagenet_classes.json"
DEPTH = 4  # hypernym levels walked above the class: far enough for Egyptian cat -> cat, not to "organism"
# words too general to name what a photo shows: walking up WordNet reaches them for almost anything
GENERIC = {
    "entity", "object", "whole", "thing", "unit", "artifact", "artefact", "device", "instrument",
    "instrumentality", "equipment", "structure", "construction", "container", "covering", "commodity",
    "merchandise", "ware", "matter", "substance", "material", "organism", "being", "animal", "creature",
    "beast", "fauna", "vertebrate", "invertebrate", "mammal", "placental", "carnivore", "food", "nutriment",
    "foodstuff", "produce", "system", "implement", "article", "protection", "area", "region", "facility",
    "surface", "solid", "fluid", "liquid", "part", "piece", "body", "living", "life", "form", "shape",
    "support", "decoration", "adornment", "furnishing", "furniture", "appliance", "mechanism", "machine",
    "conveyance", "transport", "vehicle", "craft", "vessel", "plant", "flora", "worker", "person",
    "individual", "brute", "drink", "beverage", "instrumentation", "nutrient", "nourishment",
    "sustenance", "aliment", "alimentation", "drinkable", "potable", "peripheral", "someone", "somebody", "mortal", "soul", "people", "group", "collection",
}


def setup_nltk(wordnet_dir: Path) -> None:
    target = Path.home() / "nltk_data" / "corpora" / "wordnet"
    if not (target / "data.noun").is_file():
        shutil.copytree(wordnet_dir, target, dirs_exist_ok=True)
        sense = Path("/usr/share/wordnet/index.sense")
        if sense.is_file():
            shutil.copy(sense, target / "index.sense")
    lex = target / "lexnames"
    if not lex.is_file():
        rows = []
        with gzip.open("/usr/share/man/man5/lexnames.5WN.gz", "rt") as f:
            for line in f:
                m = re.match(r"^(\d\d)\t\s*(\w+)\.(\w+)", line)
                if m:
                    num = {"adj": 3, "noun": 1, "verb": 2, "adv": 4}[m.group(2)]
                    rows.append(f"{m.group(1)}\t{m.group(2)}.{m.group(3)}\t{num}\n")
        lex.write_text("".join(rows))


def words_for(synset, wn) -> list[str]:
    """Single-word lemmas of the synset and its hypernyms, nearest first, without generic ones.
    A word is kept only where this synset is its first (most frequent) noun sense, so "arm"
    (of weapon) and "toy" (of toy dog) are not taken to mean a limb or a plaything."""
    out, seen = [], set()
    queue = deque([(synset, 0)])
    while queue:
        s, d = queue.popleft()
        if s in seen:
            continue
        seen.add(s)
        for lemma in s.lemma_names():
            w = lemma.lower()
            if w.isalpha() and w not in GENERIC and w not in out and wn.synsets(w, "n")[:1] == [s]:
                out.append(w)
        if d < DEPTH:
            for h in s.hypernyms() + s.instance_hypernyms():
                queue.append((h, d + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet", default="/usr/share/wordnet", help="folder of the WordNet 3.0 database files")
    ap.add_argument("--out", default=str(OUT), help="JSON file to write")
    args = ap.parse_args()
    setup_nltk(Path(args.wordnet))
    from nltk.corpus import wordnet as wn
    from timm.data import ImageNetInfo  # the class order of timm's and torchvision's ImageNet heads

    info = ImageNetInfo()
    classes = []
    for i in range(1000):
        wnid = info.index_to_label_name(i)
        s = wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
        classes.append({"wnid": wnid, "name": s.lemma_names()[0].replace("_", " "), "words": words_for(s, wn)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"source": "WordNet 3.0 hypernyms of the ImageNet-1k synsets, "
                                          f"{DEPTH} levels; tools/imagenet_words.py", "classes": classes},
                                         indent=0) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
