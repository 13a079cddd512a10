"""Export a webmoe checkpoint's main model (no MTP) to ONNX for onnxruntime-web, weights left out.

    /usr/bin/python3 tools/peer/export_onnx.py --model public/models/webmoe-kjv-12m --out tools/peer/webmoe-kjv-12m

Needs Debian's python3-torch (1.13) and python3-onnx (1.12). Steps:
1. model.py's model on the checkpoint's weights, dequantised as the engine does (tools/train/fixtures.py);
2. decoder.py's incremental step, checked against model.py on real prompts (prefill, then one token at a time);
3. torch.onnx.export of that step: one graph for prefill (P = 0) and decode (T = 1), a k/v cache per layer;
4. every weight initializer turned into external data (`weights.bin`, never written: the page builds it
   from model.safetensors), and manifest.json saying what fills each one, at which offset;
5. the manifest replayed on the checkpoint in numpy, as the page does, must give the exported bytes.

OUT/decoder.onnx is the graph (~100 KB); OUT/manifest.json the table. See tools/peer/README.md.
"""

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from decoder import CachedDecoder, cache_names  # noqa: E402
from fixtures import load_exported_model  # noqa: E402
from fp8 import bf16_decode, dequantize_block_fp8  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402

EXTERNAL_FILE = "weights.bin"
ALIGN = 64  # byte alignment of each initializer in weights.bin (Float32Array views need 4)
OPSET = 17
REPO = Path(__file__).resolve().parent.parent.parent


@torch.no_grad()
def check_against_model(model, step: CachedDecoder, prompt: list[int], new_tokens: int) -> float:
    """Prefill `prompt`, then feed model.py's own greedy tokens one at a time; every row of
    logits must match model.py's full recompute. Returns the largest absolute difference."""
    seq, worst = list(prompt), 0.0
    out = step(torch.tensor([prompt]), *step.empty_cache())
    for n in range(new_tokens):
        expected = model.lm_head(model.hidden_states(torch.tensor([seq])))[0, -1]
        worst = max(worst, float((out[0][0] - expected).abs().max()))
        top = expected.topk(2).values
        if int(out[0][0].argmax()) != int(expected.argmax()) and float(top[0] - top[1]) > 1e-4:
            raise SystemExit(f"export_onnx: step {n}: decoder.py chose {int(out[0][0].argmax())}, model.py {int(expected.argmax())}")
        seq.append(int(expected.argmax()))
        out = step(torch.tensor([[seq[-1]]]), *out[1:])
    if worst > 1e-3:
        raise SystemExit(f"export_onnx: decoder.py's logits differ from model.py's by {worst:.3g} (> 1e-3)")
    return worst


def export_graph(step: CachedDecoder) -> onnx.ModelProto:
    L = step.c.num_hidden_layers
    past, present = cache_names(L, "past"), cache_names(L, "present")
    # Dummy shapes T = 3, P = 2 (not 0 or 1, so that no dimension is traced as a constant).
    dummy = (torch.tensor([[5, 6, 7]]), *[torch.zeros(*t.shape[:2], 2, t.shape[3]) for t in step.empty_cache()])
    axes = {"input_ids": {1: "sequence"}, **{n: {2: "past_sequence"} for n in past}, **{n: {2: "total_sequence"} for n in present}}
    buffer = io.BytesIO()
    torch.onnx.export(step, dummy, buffer, input_names=["input_ids", *past], output_names=["logits", *present], dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def externalise(graph: onnx.ModelProto, step: CachedDecoder) -> list[dict]:
    """Renames the weight initializers to their table names and points them at EXTERNAL_FILE;
    returns the manifest entries (offset, bytes, shape, sources, transpose)."""
    by_name = {t.name: t for t in graph.graph.initializer}  # the exporter names them by module path: w.<buffer>
    missing = [b for b in step.w.initializers if f"w.{b}" not in by_name]
    if missing:
        raise SystemExit(f"export_onnx: the exporter renamed or dropped the initializers {missing}")
    renames, entries, offset = {}, [], 0
    for buffer, init in step.w.initializers.items():
        tensor = by_name[f"w.{buffer}"]
        if tensor.data_type != TensorProto.FLOAT or list(tensor.dims) != init.shape:
            raise SystemExit(f"export_onnx: initializer {buffer} is {tensor.data_type} {list(tensor.dims)}, expected float {init.shape}")
        length = len(tensor.raw_data)
        entries.append({"name": init.name, "offset": offset, "bytes": length, "shape": init.shape, "sources": init.sources, "transpose": init.transpose, "exported": np.frombuffer(tensor.raw_data, np.float32)})
        tensor.name = renames[f"w.{buffer}"] = init.name
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", EXTERNAL_FILE), ("offset", str(offset)), ("length", str(length))):
            tensor.external_data.add(key=key, value=value)
        offset += -(-length // ALIGN) * ALIGN
    for node in graph.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
    return entries


def fill_from_checkpoint(entry: dict, tensors: dict) -> np.ndarray:
    """What the page does for one initializer (src/pages/bench/peer_weights.ts): each source
    dequantised to float32 (F8_E4M3 * weight_scale_inv per 128x128 block, BF16 << 16, F32),
    transposed if asked, concatenated."""
    parts = []
    for name in entry["sources"]:
        dtype, raw = tensors[name]
        value = {"F8_E4M3": lambda: dequantize_block_fp8(raw, tensors[f"{name}_scale_inv"][1]), "BF16": lambda: bf16_decode(raw), "F32": lambda: raw}[dtype]()
        parts.append(value.T if entry["transpose"] else value)
    return np.concatenate([np.ascontiguousarray(p, np.float32).ravel() for p in parts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "public/models/webmoe-kjv-12m"), help="checkpoint folder: config.json + model.safetensors")
    parser.add_argument("--out", default=str(REPO / "tools/peer/webmoe-kjv-12m"), help="folder for decoder.onnx and manifest.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_exported_model(args.model)
    step = CachedDecoder(model).eval()
    fixture = json.loads((REPO / "tools/train/fixtures/webmoe-kjv-12m.json").read_text())
    worst = check_against_model(model, step, fixture["greedy"]["prompt"], 12)
    print(f"export_onnx: decoder.py matches model.py over 12 cached steps (max |diff| {worst:.2e})")

    graph = export_graph(step)
    onnx.checker.check_model(graph)  # before the weights leave it (the checker would look for weights.bin)
    entries = externalise(graph, step)
    tensors = read_safetensors(os.path.join(args.model, "model.safetensors"))
    for e in entries:
        if not np.array_equal(fill_from_checkpoint(e, tensors), e.pop("exported")):
            raise SystemExit(f"export_onnx: the manifest does not rebuild {e['name']} from the checkpoint")

    c = step.c
    os.makedirs(args.out, exist_ok=True)
    graph_path = os.path.join(args.out, "decoder.onnx")
    with open(graph_path, "wb") as f:
        f.write(graph.SerializeToString())
    manifest = {
        "format": "webmoe-onnx-peer/1",
        "about": "tools/peer/export_onnx.py: decoder.onnx's weight initializers, stored in the external file `location` (built at run time); each is its `sources` from model.safetensors dequantised to float32 (F8_E4M3 * weight_scale_inv per 128x128 block, BF16 << 16, F32), each transposed when `transpose`, concatenated, at `offset`.",
        "checkpoint": os.path.basename(os.path.normpath(args.model)),
        "torch_version": torch.__version__,
        "opset": OPSET,
        "location": EXTERNAL_FILE,
        "bytes": max(e["offset"] + e["bytes"] for e in entries),
        "inputs": ["input_ids", *cache_names(c.num_hidden_layers, "past")],
        "outputs": ["logits", *cache_names(c.num_hidden_layers, "present")],
        "cache": {"heads": c.num_attention_heads, "key_dim": c.qk_nope_head_dim + c.qk_rope_head_dim, "value_dim": c.v_head_dim, "layers": c.num_hidden_layers},
        "vocab_size": c.vocab_size,
        "initializers": entries,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    ops = sorted({n.op_type for n in graph.graph.node})
    print(f"export_onnx: {graph_path} ({os.path.getsize(graph_path) / 1e3:.0f} KB, {len(graph.graph.node)} nodes: {', '.join(ops)}); "
          f"{len(entries)} initializers, {manifest['bytes'] / 2**20:.1f} MiB of float32 weights built at run time")


if __name__ == "__main__":
    main()
