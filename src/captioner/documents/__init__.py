"""Alt text where it is read: web pages, Markdown, Word and PowerPoint files, e-books.

    captioner check docs/                                   # every image reference and its status
    captioner fill docs/ --output proposals.jsonl           # caption what needs alt text, once per image
    captioner review proposals.jsonl                        # a person decides, with each image's context
    captioner fill docs/ --write --from proposals.jsonl     # put the (reviewed) alt text into the documents

The library functions behind them (the CLI only parses and prints):

- ``check(paths, root=None) -> [ImageRef]``: walk folders for the suffixes of ``formats.SUFFIXES``
  (hidden names skipped, sorted), read each document with its format, resolve each ``src``
  (``paths.py``) and give each reference its status (``refs.status``).  A document that cannot be read
  is one error (``.errors``) and the others go on.  Never opens an image, never loads the model.
- ``fill(paths, captioner=None, output=None, root=None, ...) -> [record]``: the proposals: one record per
  DISTINCT image (by content hash, however many documents use it), captioned once, unless a context rule
  (``context.py``) decides its alt text without the model; each record lists its references with their
  document (and its sha256), location, context, proposed alt text and the rule that decided it.  With
  ``output``: appended to a results file (``library/results.py``) that ``captioner review`` opens.
- ``write(paths, from_=None, reviewed_only=False, overwrite=False, diff=False, root=None, ...)``: the alt
  text into the documents, straight from a fresh ``fill`` or from a proposals file and its review
  decisions.  Only missing and suspicious alt text is filled unless ``overwrite``; a document changed since
  its proposals were made is refused; every problem is found before anything is written (a read-only or
  changed document: nothing is written at all); each document is replaced atomically (``_replace``).

The formats (html, markdown, ooxml, epub) implement ``formats.Format``; nothing here knows a format's
syntax, and no format knows of captioning.
"""
from captioner.documents.filling import Proposals, fill
from captioner.documents.reading import Checked, check, location_text, read_document, walk
from captioner.documents.writing import Written, image_for_review, planned_alts, read_proposals, write

__all__ = ["Checked", "Proposals", "Written", "check", "fill", "image_for_review", "location_text", "planned_alts",
           "read_document", "read_proposals", "walk", "write"]
