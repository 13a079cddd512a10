"""The training corpus: freely licensed text from Debian packages on this machine.

- The King James Bible (1611), Debian package `bible-kjv-text` (data) read with `bible-kjv`'s
  `bible` program. The text is in the public domain (the package's copyright file: "The copyright
  for the King James Version text of the Bible is expired"). One document per chapter.
- Python's standard library sources, /usr/lib/python3.11/*.py (top level only), Debian package
  `libpython3.11-stdlib`, Python Software Foundation License Version 2. One document per file.

Every `HELDOUT_EVERY`-th document (by position in a fixed order) is held out.
"""

import glob
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass

HELDOUT_EVERY = 40
PYTHON_STDLIB_GLOB = "/usr/lib/python3.11/*.py"
KJV_RANGE = "gen1:1-rev22:21"

SOURCES = [
    {
        "name": "King James Bible (1611)",
        "debian_package": "bible-kjv-text (read with bible-kjv's `bible -l100000 gen1:1-rev22:21`)",
        "licence": "public domain (copyright expired; see /usr/share/doc/bible-kjv-text/copyright)",
        "unit": "one document per chapter: '<Book> <chapter>' then one verse per line",
    },
    {
        "name": "Python 3.11 standard library sources",
        "debian_package": "libpython3.11-stdlib (" + PYTHON_STDLIB_GLOB + ")",
        "licence": "Python Software Foundation License Version 2 (/usr/share/doc/libpython3.11-stdlib/copyright)",
        "unit": "one document per file",
    },
]


@dataclass(frozen=True)
class Document:
    source: str  # "kjv" or "python"
    name: str  # "Genesis 1" or "argparse.py"
    text: str


def kjv_documents() -> list[Document]:
    """The Bible, one document per chapter, from `bible`'s pretty-printed output."""
    try:
        out = subprocess.run(["bible", "-l100000", KJV_RANGE], check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as e:
        raise SystemExit("corpus: the `bible` program is missing: apt-get install -y bible-kjv bible-kjv-text") from e
    docs: list[Document] = []
    header, verses = None, []
    for line in out.splitlines():
        if not line.strip():
            continue
        if line.startswith("  "):  # "  12 verse text"
            verses.append(line.strip())
        else:  # "Genesis 1": a new chapter
            if header is not None:
                docs.append(Document("kjv", header, header + "\n\n" + "\n".join(verses) + "\n"))
            header, verses = line.strip(), []
    if header is not None:
        docs.append(Document("kjv", header, header + "\n\n" + "\n".join(verses) + "\n"))
    if len(docs) != 1189:
        raise SystemExit(f"corpus: expected the 1189 chapters of the KJV, got {len(docs)}")
    return docs


def python_documents() -> list[Document]:
    paths = sorted(glob.glob(PYTHON_STDLIB_GLOB))
    if not paths:
        raise SystemExit(f"corpus: no files match {PYTHON_STDLIB_GLOB}")
    docs = []
    for path in paths:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
        # Tabs and form feeds are rare in the stdlib; keep text as is apart from line endings.
        docs.append(Document("python", os.path.basename(path), re.sub(r"\r\n?", "\n", text)))
    return docs


def split_documents(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """(train, heldout): every HELDOUT_EVERY-th document of each source is held out."""
    train, heldout = [], []
    by_source: dict[str, list[Document]] = {}
    for d in docs:
        by_source.setdefault(d.source, []).append(d)
    for source_docs in by_source.values():
        for i, d in enumerate(source_docs):
            (heldout if i % HELDOUT_EVERY == HELDOUT_EVERY // 2 else train).append(d)
    return train, heldout


def corpus_fingerprint(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()


def load_corpus() -> list[Document]:
    return kjv_documents() + python_documents()
