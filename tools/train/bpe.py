"""Byte-level BPE: training on word-frequency tables, encoding, and the Hugging Face files.

The pre-tokenizer is GPT-2's regex (what a `ByteLevel` pre-tokenizer with `use_regex: true`
applies), written for Python's `re`, which has no \\p{L}/\\p{N}: letters are `[^\\W\\d_]`, numbers
`\\d`. The two agree on ASCII text (all of the KJV, nearly all of the Python sources).

Ids: the special tokens first (DeepSeek-V3's begin/end of sentence are 0 and 1), then the 256
byte tokens in byte order, then one token per merge in merge order.
"""

import heapq
import json
import re
from collections import Counter, defaultdict

GPT2_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
USER_TOKEN = "<｜User｜>"
ASSISTANT_TOKEN = "<｜Assistant｜>"
# (content, special) in id order; the role markers are not "special" in DeepSeek-V3 either,
# so decoding keeps them.
ADDED_TOKENS = [(BOS_TOKEN, True), (EOS_TOKEN, True), (USER_TOKEN, False), (ASSISTANT_TOKEN, False)]

# DeepSeek-V3's template reduced to system, user and assistant turns, with the same markers.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (spaces become 'Ġ', newlines 'Ċ')."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()


def to_symbols(chunk: str) -> tuple[str, ...]:
    return tuple(BYTE_TO_CHAR[b] for b in chunk.encode("utf-8"))


def _merge_word(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(texts: list[str], n_merges: int, log=print) -> list[tuple[str, str]]:
    """The n_merges most frequent pair merges, learnt greedily (ties: smallest pair first).

    Pair counts are kept incrementally: a merge only revisits the words that contain the pair,
    and a lazy max-heap holds (-count, pair) entries that are checked against the live count.
    """
    chunk_counts = Counter()
    for text in texts:
        chunk_counts.update(GPT2_PATTERN.findall(text))
    words = [to_symbols(chunk) for chunk in chunk_counts]
    counts = list(chunk_counts.values())
    log(f"bpe: {sum(counts):,} chunks, {len(words):,} distinct")

    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += counts[wi]
            pair_words[pair].add(wi)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count or neg_count == 0:
            continue  # stale entry
        merges.append(pair)
        merged = pair[0] + pair[1]
        changed = set()
        for wi in pair_words.pop(pair):
            old = words[wi]
            new = _merge_word(old, pair, merged)
            if new == old:
                continue
            c = counts[wi]
            for p in zip(old, old[1:]):
                pair_counts[p] -= c
                changed.add(p)
            for p in zip(new, new[1:]):
                pair_counts[p] += c
                pair_words[p].add(wi)
                changed.add(p)
            words[wi] = new
        pair_counts.pop(pair, None)
        for p in changed:
            if p != pair and pair_counts.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
        if len(merges) % 1000 == 0:
            log(f"bpe: {len(merges)} merges, last {merged!r} x{-neg_count}")
    return merges


class ByteLevelBPE:
    """Encoder for a trained merge list, with the ids described in the module docstring."""

    def __init__(self, merges: list[tuple[str, str]]):
        self.merges = merges
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.vocab: dict[str, int] = {content: i for i, (content, _) in enumerate(ADDED_TOKENS)}
        for b in range(256):
            self.vocab[BYTE_TO_CHAR[b]] = len(self.vocab)
        for a, b in merges:
            if a + b in self.vocab:
                raise ValueError(f"bpe: merge {a!r} + {b!r} makes an existing token")
            self.vocab[a + b] = len(self.vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.char_to_byte = {c: b for b, c in BYTE_TO_CHAR.items()}
        self._cache: dict[str, list[int]] = {}

    @property
    def bos_id(self) -> int:
        return self.vocab[BOS_TOKEN]

    @property
    def eos_id(self) -> int:
        return self.vocab[EOS_TOKEN]

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Merge the lowest-ranked adjacent pair until none is in the merge list (as HF's BPE model)."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        word = list(to_symbols(chunk))
        while len(word) > 1:
            ranked = [(self.ranks.get(p, len(self.ranks)), i) for i, p in enumerate(zip(word, word[1:]))]
            rank, _ = min(ranked)
            if rank == len(self.ranks):
                break
            word = list(_merge_word(tuple(word), self.merges[rank], "".join(self.merges[rank])))
        ids = [self.vocab[s] for s in word]
        self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Plain text (no special tokens are recognised inside it) -> ids."""
        ids: list[int] = []
        for chunk in GPT2_PATTERN.findall(text):
            ids.extend(self._encode_chunk(chunk))
        return ids

    def decode(self, ids) -> str:
        data = bytearray()
        for i in ids:
            token = self.id_to_token[int(i)]
            if token in dict(ADDED_TOKENS):
                data.extend(token.encode("utf-8"))
            else:
                data.extend(self.char_to_byte[c] for c in token)
        return data.decode("utf-8", errors="replace")

    def tokenizer_json(self) -> dict:
        """The Hugging Face tokenizer.json object (BPE model, ByteLevel pre-tokenizer and decoder)."""
        byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": special}
                for i, (content, special) in enumerate(ADDED_TOKENS)
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", **byte_level},
            "post_processor": {"type": "ByteLevel", **byte_level, "trim_offsets": False},
            "decoder": {"type": "ByteLevel", **byte_level},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": self.vocab,
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def tokenizer_config_json(self, model_max_length: int) -> dict:
        return {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": EOS_TOKEN,
            "unk_token": None,
            "clean_up_tokenization_spaces": False,
            "legacy": True,
            "model_max_length": model_max_length,
            "tokenizer_class": "LlamaTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
        }

    def save(self, directory: str, model_max_length: int) -> None:
        with open(f"{directory}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(self.tokenizer_json(), f, ensure_ascii=False)
        with open(f"{directory}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(self.tokenizer_config_json(model_max_length), f, ensure_ascii=False, indent=2)

    @classmethod
    def load(cls, directory: str) -> "ByteLevelBPE":
        with open(f"{directory}/tokenizer.json", encoding="utf-8") as f:
            model = json.load(f)["model"]
        tokenizer = cls([tuple(m.split(" ")) for m in model["merges"]])
        if tokenizer.vocab != model["vocab"]:
            raise ValueError(f"{directory}/tokenizer.json: vocab does not follow from the merges")
        return tokenizer
