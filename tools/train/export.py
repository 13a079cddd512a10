"""Export a training state to the released DeepSeek-V3 layout: config.json, model.safetensors
(FP8 block-scaled linear weights), tokenizer files.

    /usr/bin/python3 tools/train/export.py --state RUN/state.pt --data DATA_DIR --out public/models/NAME

Dtypes (src/model/MATH.md 2.1): every nn.Linear is F8_E4M3 with an F32 `weight_scale_inv` per
128x128 block, except the MTP's `eh_proj` and `lm_head` (BF16); norms, embeddings and the router
are BF16; `e_score_correction_bias` is F32. The MTP layer's `embed_tokens` and
`shared_head.head` are written as copies of the main embedding and lm_head, as released.
"""

import argparse
import json
import os
import shutil

import numpy as np
import torch
from torch import nn

import fp8
from model import DeepseekV3Config, DeepseekV3ForCausalLM
from safetensors_io import write_safetensors

BF16_LINEARS = ("eh_proj", "lm_head")  # Linears that the release keeps in BF16


def tensor_dtypes(model: DeepseekV3ForCausalLM) -> dict[str, str]:
    """Released name -> safetensors dtype for every tensor of the checkpoint (scales included)."""
    c = model.config
    linear_names = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear) and not name.endswith(BF16_LINEARS)}
    dtypes = {}
    for name in model.state_dict():
        if name in linear_names:
            dtypes[name] = "F8_E4M3"
            dtypes[f"{name}_scale_inv"] = "F32"
        elif name.endswith("e_score_correction_bias"):
            dtypes[name] = "F32"
        else:
            dtypes[name] = "BF16"
    mtp = f"model.layers.{c.num_hidden_layers}."
    dtypes[mtp + "embed_tokens.weight"] = "BF16"
    dtypes[mtp + "shared_head.head.weight"] = "BF16"
    return dtypes


def released_float_tensors(model: DeepseekV3ForCausalLM) -> dict[str, np.ndarray]:
    """state_dict as float32 numpy, plus the MTP copies of the embedding and head."""
    tensors = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    mtp = f"model.layers.{model.config.num_hidden_layers}."
    tensors[mtp + "embed_tokens.weight"] = tensors["model.embed_tokens.weight"]
    tensors[mtp + "shared_head.head.weight"] = tensors["lm_head.weight"]
    return tensors


def encode_checkpoint(model: DeepseekV3ForCausalLM) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (safetensors dtype, raw array) in the released layout, sorted by name."""
    dtypes = tensor_dtypes(model)
    out = {}
    for name, value in released_float_tensors(model).items():
        dtype = dtypes[name]
        if dtype == "F8_E4M3":
            codes, scale = fp8.quantize_block_fp8(value)
            out[name] = ("F8_E4M3", codes)
            out[f"{name}_scale_inv"] = ("F32", scale)
        elif dtype == "BF16":
            out[name] = ("BF16", fp8.bf16_encode(value))
        else:
            out[name] = ("F32", value.astype(np.float32))
    return dict(sorted(out.items()))


def decode_checkpoint(tensors: dict[str, tuple[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """The float32 weights the engine sees (FP8 and BF16 rounding applied): a state_dict for the
    torch model, e.g. to make fixtures that the engine must match."""
    state = {}
    for name, (dtype, raw) in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        if dtype == "F8_E4M3":
            value = fp8.dequantize_block_fp8(raw, tensors[f"{name}_scale_inv"][1])
        elif dtype == "BF16":
            value = fp8.bf16_decode(raw)
        else:
            value = raw.astype(np.float32)
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    return state


def estimate_bytes(config: DeepseekV3Config) -> int:
    """model.safetensors size (without the JSON header) for a config, from the tensor shapes."""
    model = DeepseekV3ForCausalLM(config)  # torch 1.13 has no meta-device context: build it for real
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mtp = f"model.layers.{config.num_hidden_layers}."
    shapes[mtp + "embed_tokens.weight"] = shapes["model.embed_tokens.weight"]
    shapes[mtp + "shared_head.head.weight"] = shapes["lm_head.weight"]
    total = 0
    for name, dtype in tensor_dtypes(model).items():
        if name.endswith("_scale_inv"):
            rows, cols = shapes[name[: -len("_scale_inv")]]
            total += 4 * (-(-rows // fp8.BLOCK)) * (-(-cols // fp8.BLOCK))
        else:
            total += int(np.prod(shapes[name])) * {"F8_E4M3": 1, "BF16": 2, "F32": 4}[dtype]
    return total


def hf_config(config: DeepseekV3Config) -> dict:
    """config.json with the released DeepSeek-V3 key set."""
    c = config
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "aux_loss_alpha": c.aux_loss_alpha,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "ep_size": 1,
        "first_k_dense_replace": c.first_k_dense_replace,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size,
        "kv_lora_rank": c.kv_lora_rank,
        "max_position_embeddings": c.max_position_embeddings,
        "model_type": "deepseek_v3",
        "moe_intermediate_size": c.moe_intermediate_size,
        "moe_layer_freq": 1,
        "n_group": c.n_group,
        "n_routed_experts": c.n_routed_experts,
        "n_shared_experts": c.n_shared_experts,
        "norm_topk_prob": True,
        "num_attention_heads": c.num_attention_heads,
        "num_experts_per_tok": c.num_experts_per_tok,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_attention_heads,
        "num_nextn_predict_layers": c.num_nextn_predict_layers,
        "pretraining_tp": 1,
        "q_lora_rank": c.q_lora_rank,
        "qk_nope_head_dim": c.qk_nope_head_dim,
        "qk_rope_head_dim": c.qk_rope_head_dim,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
        "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": c.rope_scaling,
        "rope_theta": c.rope_theta,
        "routed_scaling_factor": c.routed_scaling_factor,
        "scoring_func": "sigmoid",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": c.topk_group,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.33.1",
        "use_cache": True,
        "v_head_dim": c.v_head_dim,
        "vocab_size": c.vocab_size,
    }


def load_state(path: str) -> DeepseekV3ForCausalLM:
    state = torch.load(path, map_location="cpu")
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**state["config"]))
    model.load_state_dict(state["model"])
    return model


@torch.no_grad()
def heldout_loss(model: DeepseekV3ForCausalLM, heldout: np.ndarray, seq_len: int, windows: int) -> float:
    """Mean main-model loss over the first `windows` non-overlapping held-out windows."""
    model.eval()
    n = min(windows, (len(heldout) - 1) // seq_len)
    batch = np.stack([heldout[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)]).astype(np.int64)
    return float(model(torch.from_numpy(batch))["main_loss"])


def export(model: DeepseekV3ForCausalLM, data_dir: str, out_dir: str) -> dict[str, tuple[str, np.ndarray]]:
    os.makedirs(out_dir, exist_ok=True)
    tensors = encode_checkpoint(model)
    size = write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model.config), f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(data_dir, name), os.path.join(out_dir, name))
    print(f"export: {len(tensors)} tensors, model.safetensors {size / 1e6:.2f} MB -> {out_dir}")
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, help="state.pt written by train.py")
    parser.add_argument("--data", required=True, help="the prepare.py folder (tokenizer files, heldout.bin)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--heldout-windows", type=int, default=8, help="compare held-out loss before/after FP8 rounding on this many windows (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_state(args.state)
    tensors = export(model, args.data, args.out)
    if args.heldout_windows:
        seq_len = torch.load(args.state, map_location="cpu")["seq_len"]
        heldout = np.fromfile(os.path.join(args.data, "heldout.bin"), dtype=np.uint16)
        before = heldout_loss(model, heldout, seq_len, args.heldout_windows)
        rounded = DeepseekV3ForCausalLM(model.config)
        mtp = f"model.layers.{model.config.num_hidden_layers}."
        state = {k: v for k, v in decode_checkpoint(tensors).items() if k not in (mtp + "embed_tokens.weight", mtp + "shared_head.head.weight")}
        rounded.load_state_dict(state)
        after = heldout_loss(rounded, heldout, seq_len, args.heldout_windows)
        print(f"export: held-out loss {before:.4f} in float32, {after:.4f} with the exported FP8/BF16 weights")


if __name__ == "__main__":
    main()
