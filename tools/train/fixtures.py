"""Reference outputs of the torch model (model.py) on the EXPORTED weights, for the engine's tests.

    /usr/bin/python3 tools/train/fixtures.py --model public/models/NAME --data DATA --out FILE.json

The weights are read back from NAME/model.safetensors and widened to float32 exactly as the engine
does (src/model/MATH.md section 3): F8_E4M3 code value * weight_scale_inv of its 128x128 block,
BF16 -> F32 by a 16-bit shift, F32 as stored. model.py then runs in float32 on one thread, with
naive MLA and no KV cache (every forward starts at position 0). See `fixture()` for the fields.
"""

import argparse
import dataclasses
import hashlib
import json
import os

import numpy as np
import torch

from export import decode_checkpoint
from model import DeepseekV3Config, DeepseekV3ForCausalLM
from safetensors_io import read_safetensors

# config.json values that model.py hard-codes; another value would make it a different model.
FIXED_CONFIG = {
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "moe_layer_freq": 1,
}


def config_from_json(config: dict, path: str) -> DeepseekV3Config:
    for key, value in FIXED_CONFIG.items():
        if key in config and config[key] != value:
            raise SystemExit(f"fixtures: {path}: {key} is {config[key]!r}; model.py implements only {value!r}")
    names = [f.name for f in dataclasses.fields(DeepseekV3Config)]
    missing = [n for n in names if n not in config and n != "initializer_range"]
    if missing:
        raise SystemExit(f"fixtures: {path} lacks {', '.join(missing)}")
    return DeepseekV3Config(**{n: config[n] for n in names if n in config})


def load_exported_model(model_dir: str) -> DeepseekV3ForCausalLM:
    """config.json + model.safetensors -> model.py's model holding the engine's float32 weights."""
    config_path = os.path.join(model_dir, "config.json")
    with open(config_path) as f:
        config = config_from_json(json.load(f), config_path)
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    for name, (dtype, _) in tensors.items():
        if dtype == "F8_E4M3" and f"{name}_scale_inv" not in tensors:
            raise SystemExit(f"fixtures: {model_dir}/model.safetensors: {name} is F8_E4M3 but {name}_scale_inv is missing")
    state = decode_checkpoint(tensors)
    # model.py shares the embedding and head with the MTP layer; the file must hold equal copies.
    mtp = f"model.layers.{config.num_hidden_layers}."
    for copy, main in ((mtp + "embed_tokens.weight", "model.embed_tokens.weight"), (mtp + "shared_head.head.weight", "lm_head.weight")):
        if copy not in state:
            raise SystemExit(f"fixtures: {model_dir}/model.safetensors: tensor {copy} is missing")
        if not torch.equal(state.pop(copy), state[main]):
            raise SystemExit(f"fixtures: {copy} differs from {main}; model.py cannot represent separate MTP copies")
    model = DeepseekV3ForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"fixtures: {model_dir}/model.safetensors: missing tensors {missing}, unexpected tensors {unexpected}")
    return model.eval()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rounded(values: torch.Tensor, digits: int) -> list:
    """Nested lists of floats with `digits` significant digits (shortest decimal that reads back)."""
    return np.vectorize(lambda x: float(f"{x:.{digits}g}"), otypes=[object])(values.detach().double().numpy()).tolist()


def top1(logits: torch.Tensor) -> tuple[list[int], list[float]]:
    """argmax (torch: the lowest index on ties) and top-1 minus top-2 margin of each row of [T, V]."""
    top = logits.topk(2, dim=-1).values
    return logits.argmax(-1).tolist(), rounded(top[:, 0] - top[:, 1], 4)


@torch.no_grad()
def main_logits(model: DeepseekV3ForCausalLM, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [T] -> (h after model.norm [1, T, d], logits [T, V]); row t predicts ids[t + 1]."""
    h = model.hidden_states(torch.tensor([ids]))
    return h, model.lm_head(h)[0]


@torch.no_grad()
def greedy(model: DeepseekV3ForCausalLM, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """n argmax tokens, recomputing the whole sequence each step; EOS is an ordinary token."""
    seq, margins = list(prompt), []
    for _ in range(n):
        _, logits = main_logits(model, seq)
        token, margin = top1(logits[-1:])
        seq.append(token[0])
        margins += margin
    return seq[len(prompt) :], margins


def document_starts(heldout: np.ndarray, bos_id: int) -> np.ndarray:
    return np.flatnonzero(heldout == bos_id)


@torch.no_grad()
def fixture(model: DeepseekV3ForCausalLM, heldout: np.ndarray, code_doc: int, args: argparse.Namespace) -> dict:
    starts = document_starts(heldout, args.bos_id)
    ids = heldout[starts[0] : starts[0] + args.ids].tolist()  # the first held-out document (KJV)
    h, logits = main_logits(model, ids)
    argmax, margins = top1(logits)
    last = list(range(len(ids) - args.last_rows, len(ids)))

    # MTP row i: eh_proj(cat(enorm(embed(ids[i+1])), hnorm(h_i))), decoder layer L at RoPE position i,
    # shared_head -> distribution of ids[i+2]; h_i is taken after the final norm (model.py's convention).
    mtp_logits = model.mtp_logits(h[:, :-1], torch.tensor([ids[1:]]))[0]
    mtp_argmax, mtp_margins = top1(mtp_logits)

    scored = heldout[starts[code_doc] : starts[code_doc] + args.heldout].tolist()  # a held-out Python file
    _, scored_logits = main_logits(model, scored)
    nll = torch.nn.functional.cross_entropy(scored_logits[:-1], torch.tensor(scored[1:]), reduction="none")

    prompt = ids[: args.prompt]
    tokens, greedy_margins = greedy(model, prompt, args.greedy)
    return {
        "format": "webmoe-torch-fixture/1",
        "about": (
            "tools/train/fixtures.py: model.py (torch, float32, naive MLA, no KV cache, one forward from position 0 per "
            "sequence) on the exported weights dequantised as the engine does (F8_E4M3 * weight_scale_inv per 128x128 block, "
            "BF16 -> F32). Logits carry 6 significant digits, NLLs 7, margins (top-1 minus top-2) 4."
        ),
        "model": {
            "dir": os.path.basename(os.path.normpath(args.model)),
            "safetensors_sha256": file_sha256(os.path.join(args.model, "model.safetensors")),
        },
        "torch_version": torch.__version__,
        "ids": ids,
        "logits_last_positions": last,
        "logits_last_rows": rounded(logits[last], 6),
        "logits_all_positions_argmax": argmax,
        "logits_all_positions_margin": margins,
        "heldout": {
            "ids": scored,
            "per_token_nll": rounded(nll, 7),  # entry t: -log p(ids[t+1] | ids[0..t]), natural log
            "mean_nll": float(f"{nll.mean().item():.7g}"),
        },
        "greedy": {"prompt": prompt, "tokens": tokens, "margins": greedy_margins},
        "mtp": {
            "hidden_source": "post_final_norm",
            "positions": list(range(len(ids) - 1)),  # row i uses h_i and ids[i+1], predicts ids[i+2]
            "argmax": mtp_argmax,
            "margins": mtp_margins,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported folder: config.json + model.safetensors")
    parser.add_argument("--data", required=True, help="the prepare.py folder (heldout.bin, corpus.json)")
    parser.add_argument("--out", required=True, help="fixture .json to write")
    parser.add_argument("--ids", type=int, default=48, help="tokens of the logits / MTP sequence")
    parser.add_argument("--last-rows", type=int, default=4, help="full-vocabulary logit rows kept (the last ones)")
    parser.add_argument("--heldout", type=int, default=128, help="tokens of the held-out NLL sequence")
    parser.add_argument("--prompt", type=int, default=16, help="greedy prompt: the first tokens of `ids`")
    parser.add_argument("--greedy", type=int, default=24, help="greedy tokens to generate")
    parser.add_argument("--bos-id", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_exported_model(args.model)
    heldout = np.fromfile(os.path.join(args.data, "heldout.bin"), dtype=np.uint16)
    with open(os.path.join(args.data, "corpus.json")) as f:
        code_doc = json.load(f)["heldout"]["kjv"]["documents"]  # held-out documents are KJV first, then Python
    data = fixture(model, heldout, code_doc, args)
    with open(args.out, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(
        f"fixtures: {len(data['ids'])} ids, held-out mean NLL {data['heldout']['mean_nll']:.4f} over "
        f"{len(data['heldout']['per_token_nll'])} tokens, greedy {data['greedy']['tokens']} -> {args.out} "
        f"({os.path.getsize(args.out) / 1e3:.0f} KB)"
    )


if __name__ == "__main__":
    main()
