"""Alt text where it is read: web pages, Markdown, Word and PowerPoint files, e-books.

    captioner check docs/                                   # every image reference and its status
    captioner fill docs/ --output proposals.jsonl           # caption what needs alt text, once per image
    captioner fill docs/ --write --from proposals.jsonl     # put the (reviewed) alt text into the documents

The formats (html, markdown, ooxml, epub) implement ``formats.Format``; this package's orchestration
walks folders, resolves images, captions each distinct image once and writes atomically.
"""
