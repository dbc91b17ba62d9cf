"""Wording options for captions and alt text: ``--gender-neutral``.

A captioner cannot see gender; it guesses it from clothes and hair, and Flickr8k's crowd workers
named a gender in most of their captions, so the model learned to.  ``neutral()`` maps the gendered
nouns and pronouns of the model's vocabulary to neutral ones, word by word ("a man and a girl" ->
"a person and a child"; "his" -> "their").  The cost in test BLEU/CIDEr-D, scored against references
mapped the same way, and how often the references name a gender are in docs/text.md
(``captioner evaluate --split test --gender-neutral``).
"""
from __future__ import annotations

import re

NEUTRAL = {
    "man": "person", "woman": "person", "men": "people", "women": "people",
    "boy": "child", "girl": "child", "boys": "children", "girls": "children",
    "guy": "person", "guys": "people", "lady": "person", "ladies": "people",
    "gentleman": "person", "gentlemen": "people", "male": "person", "female": "person",
    "males": "people", "females": "people",
    "son": "child", "daughter": "child", "sons": "children", "daughters": "children",
    "mother": "parent", "father": "parent", "mom": "parent", "dad": "parent",
    "mothers": "parents", "fathers": "parents", "brother": "sibling", "sister": "sibling",
    "brothers": "siblings", "sisters": "siblings", "husband": "partner", "wife": "partner",
    "grandmother": "grandparent", "grandfather": "grandparent",
    "he": "they", "she": "they", "him": "them", "his": "their", "her": "their", "hers": "theirs",
    "himself": "themselves", "herself": "themselves",
    "businessman": "businessperson", "businesswoman": "businessperson",
    "policeman": "police officer", "policemen": "police officers", "fireman": "firefighter",
    "firemen": "firefighters", "sportsman": "athlete", "cowboy": "rider", "cowboys": "riders",
    "cowgirl": "rider", "girlfriend": "friend", "boyfriend": "friend",
}
GENDERED = frozenset(NEUTRAL)
_WORD = re.compile(r"[A-Za-z]+")


def neutral(text: str) -> str:
    """A sentence with every gendered word replaced, keeping an initial capital."""
    def swap(m):
        w = m.group(0)
        new = NEUTRAL.get(w.lower())
        if new is None:
            return w
        return new[:1].upper() + new[1:] if w[:1].isupper() else new

    out = _WORD.sub(swap, text)
    # "a man and a woman" became "a person and a person": say it as a person would
    return _PAIR.sub(lambda m: ("T" if m.group(1)[0].isupper() else "t") + "wo " + _PLURAL[m.group(2)], out)


_PLURAL = {"person": "people", "child": "children", "parent": "parents", "sibling": "siblings", "partner": "partners"}
_PAIR = re.compile(r"\b([Aa]) (person|child|parent|sibling|partner) and a \2\b")


def add_arguments(p, per_request: bool = False) -> None:
    """What is read and how the alt text is worded: ``caption``'s flags, and ``serve``'s defaults
    (the HTTP API and the app also take them per request)."""
    g = p.add_argument_group("text and wording" + (" (defaults; each request may choose its own)" if per_request else ""))
    g.add_argument("--read-text", choices=["auto", "always", "never"], default="auto",
                   help="read the text in images (RapidOCR, offline): auto = the images not classed photos "
                        "(screenshots, documents, charts, drawings), always = every image, never")
    g.add_argument("--gender-neutral", action="store_true",
                   help="person/child/people instead of man/woman/boy/girl/... in captions and alt text")
    g.add_argument("--max-chars", type=int, default=125, metavar="N",
                   help="longest alt text, in characters (default 125, IPTC's guidance; at least 20)")


def names_gender(words) -> bool:
    return any(w.lower() in GENDERED for w in words)
