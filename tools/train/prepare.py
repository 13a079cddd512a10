"""Build the corpus, train the tokenizer and write the token streams a training run reads.

    /usr/bin/python3 tools/train/prepare.py --out tools/train/runs/data [--vocab-size 8192]

Writes into --out: tokenizer.json, tokenizer_config.json, train.bin and heldout.bin (uint16
token ids: every document as BOS text EOS, documents back to back) and corpus.json (sources,
licences, sizes, the held-out document names).
"""

import argparse
import json
import os
import time

import numpy as np

import bpe
import corpus


def encode_documents(tokenizer: bpe.ByteLevelBPE, docs: list[corpus.Document]) -> np.ndarray:
    ids: list[int] = []
    for d in docs:
        ids.append(tokenizer.bos_id)
        ids.extend(tokenizer.encode(d.text))
        ids.append(tokenizer.eos_id)
    return np.array(ids, dtype=np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--model-max-length", type=int, default=1024, help="tokenizer_config.json's model_max_length")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    started = time.time()
    docs = corpus.load_corpus()
    train_docs, heldout_docs = corpus.split_documents(docs)
    n_merges = args.vocab_size - len(bpe.ADDED_TOKENS) - 256
    merges = bpe.train_bpe([d.text for d in train_docs], n_merges)
    if len(merges) != n_merges:
        raise SystemExit(f"prepare: the corpus gives only {len(merges)} merges, {n_merges} wanted")
    tokenizer = bpe.ByteLevelBPE(merges)
    tokenizer.save(args.out, args.model_max_length)

    streams = {"train": encode_documents(tokenizer, train_docs), "heldout": encode_documents(tokenizer, heldout_docs)}
    for name, ids in streams.items():
        ids.tofile(os.path.join(args.out, f"{name}.bin"))

    def stats(split_docs, source):
        chosen = [d for d in split_docs if d.source == source]
        return {"documents": len(chosen), "utf8_bytes": sum(len(d.text.encode()) for d in chosen)}

    manifest = {
        "sources": corpus.SOURCES,
        "heldout_rule": f"document i of each source is held out when i % {corpus.HELDOUT_EVERY} == {corpus.HELDOUT_EVERY // 2}",
        "train": {"kjv": stats(train_docs, "kjv"), "python": stats(train_docs, "python"), "tokens": int(len(streams["train"]))},
        "heldout": {
            "kjv": stats(heldout_docs, "kjv"),
            "python": stats(heldout_docs, "python"),
            "tokens": int(len(streams["heldout"])),
            "documents": [d.name for d in heldout_docs],
        },
        "vocab_size": args.vocab_size,
        "corpus_sha256": corpus.corpus_fingerprint(docs),
    }
    with open(os.path.join(args.out, "corpus.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    train_bytes = manifest["train"]["kjv"]["utf8_bytes"] + manifest["train"]["python"]["utf8_bytes"]
    print(
        f"prepare: {len(streams['train']):,} train tokens ({train_bytes / len(streams['train']):.2f} bytes/token), "
        f"{len(streams['heldout']):,} held-out tokens, {time.time() - started:.0f}s -> {args.out}"
    )


if __name__ == "__main__":
    main()
