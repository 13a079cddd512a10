"""Compare bpe.py's encoding with the JS library the engine uses, on held-out text.

    /usr/bin/python3 tools/train/check_tokenizer.py <dir-with-tokenizer.json>   (from the repo root)
"""

import json
import os
import subprocess
import sys
import tempfile

import bpe
import corpus


def main() -> None:
    directory = sys.argv[1]
    tokenizer = bpe.ByteLevelBPE.load(directory)
    _, heldout = corpus.split_documents(corpus.load_corpus())
    texts = [d.text for d in heldout] + ["Hello, world!  123 4567 ünïcödé  \n\n\tx_y = f'{a!r}'", "ἀρχή 中文 🙂"]
    samples = [{"text": t, "ids": tokenizer.encode(t)} for t in texts]
    for s in samples:
        if tokenizer.decode(s["ids"]) != s["text"]:
            raise SystemExit(f"check_tokenizer: Python round trip failed on {s['text'][:60]!r}")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(samples, f)
    try:
        script = os.path.join(os.path.dirname(__file__), "check_tokenizer.mjs")
        subprocess.run(["node", script, directory, f.name], check=True)
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()
