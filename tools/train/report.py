"""The measured parts of the model card: loss plot, architecture, training set-up, losses, expert
load balance and the MTP module's agreement with the main model.

    /usr/bin/python3 tools/train/report.py --state RUN/state.pt --run RUN --data DATA --out public/models/NAME

Writes into --out (the folder export.py made): loss.png, card_data.json (every figure) and
card_sections.md (Markdown for README.md, also printed). The held-out evaluation runs model.py in
float32 twice: on the trained weights of state.pt, and on the exported ones read back from
--out/model.safetensors (FP8/BF16 rounding applied as the engine sees them).
"""

import argparse
import csv
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import fp8  # noqa: E402
from fixtures import load_exported_model  # noqa: E402
from model import DeepseekV3Config, DeepseekV3ForCausalLM, MoE  # noqa: E402


def read_log(run: str, last_step: int) -> list[dict]:
    """log.csv rows up to last_step as floats, one per step (a row repeated by a resumed run keeps
    its last copy; rows past the state, written by a run still going, are left out)."""
    with open(os.path.join(run, "log.csv")) as f:
        rows = {int(r["step"]): {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)}
    return [rows[s] for s in sorted(rows) if s <= last_step]


def read_expert_load(run: str, last_step: int, last_rows: int) -> tuple[dict[str, list[float]], list[int]]:
    """Share of routed tokens per expert and layer over the last `last_rows` log intervals of
    expert_load.jsonl (rows {"step", "layers": {layer: [share per expert]}}), weighted by the
    steps each covers. Also returns the first and last step covered."""
    with open(os.path.join(run, "expert_load.jsonl")) as f:
        rows = {r["step"]: r["layers"] for r in map(json.loads, f)}
    steps = [0] + sorted(s for s in rows if s <= last_step)
    kept = steps[-last_rows:] if len(steps) > last_rows else steps[1:]
    before = steps[steps.index(kept[0]) - 1]
    spans = np.diff([before] + kept)
    shares = {}
    for layer in rows[kept[-1]]:
        total = sum(np.array(rows[s][layer]) * span for s, span in zip(kept, spans))
        shares[layer] = (total / total.sum()).tolist()
    return shares, [before + 1, kept[-1]]


def plot_losses(log: list[dict], path: str) -> None:
    """Train losses (means over each log interval, drawn at its middle) and held-out losses (at its end)."""
    tokens = np.array([r["tokens"] for r in log]) / 1e6
    middle = (tokens + np.concatenate([[0], tokens[:-1]])) / 2
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ax.plot(middle, [r["train_loss"] for r in log], color="tab:blue", label="train, main (interval mean)")
    ax.plot(middle, [r["train_mtp_loss"] for r in log], color="tab:blue", ls="--", label="train, MTP")
    ax.plot(tokens, [r["heldout_loss"] for r in log], color="tab:orange", marker="o", ms=3, label="held-out, main")
    ax.plot(tokens, [r["heldout_mtp_loss"] for r in log], color="tab:orange", ls="--", marker="o", ms=3, label="held-out, MTP")
    ax.set_xlabel("training tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title("Loss: main model (next token) and MTP module (token after next)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parameter_counts(config: DeepseekV3Config) -> dict[str, int]:
    """Totals, and per token with only K of the E routed experts of each MoE layer active."""
    model = DeepseekV3ForCausalLM(config)
    L, E, K = config.num_hidden_layers, config.n_routed_experts, config.num_experts_per_tok
    counts = {"main_total": 0, "main_active": 0, "mtp_total": 0, "mtp_active": 0, "embedding_and_head": 0}
    for name, p in model.named_parameters():
        part = "mtp" if name.startswith(f"model.layers.{L}.") else "main"
        share = K / E if ".mlp.experts." in name else 1.0
        counts[f"{part}_total"] += p.numel()
        counts[f"{part}_active"] += round(p.numel() * share)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            counts["embedding_and_head"] += p.numel()
    return counts


@torch.no_grad()
def evaluate(model: DeepseekV3ForCausalLM, windows: torch.Tensor, chunk: int) -> dict:
    """Held-out losses, top-1 accuracies, MTP agreement and routed load on windows [N, T + 1].

    Main logits row j (of the inputs t_0..t_{T-1}) predicts t_{j+1}; MTP row i, made from h_i (after
    the final norm) and t_{i+1}, predicts t_{i+2}. Agreement: argmax MTP row i == argmax main row i+1,
    i.e. the MTP draft equals the main model's greedy choice for the same token."""
    model.eval()
    moe_layers = {i: m.mlp for i, m in enumerate(model.model.layers) if isinstance(m.mlp, MoE)}
    sums = {"main_nll": 0.0, "mtp_nll": 0.0, "agree": 0, "mtp_correct": 0, "main_correct_same": 0, "main_correct": 0}
    load = {i: torch.zeros(model.config.n_routed_experts) for i in moe_layers}
    for batch in windows.split(chunk):
        out = model(batch)
        targets = batch[:, 1:]
        main_top, mtp_top = out["logits"].argmax(-1), out["mtp_logits"].argmax(-1)  # [B, T], [B, T - 1]
        sums["main_nll"] += float(out["main_loss"]) * targets.numel()
        sums["mtp_nll"] += float(out["mtp_loss"]) * targets[:, 1:].numel()
        sums["agree"] += int((mtp_top == main_top[:, 1:]).sum())
        sums["mtp_correct"] += int((mtp_top == targets[:, 1:]).sum())
        sums["main_correct_same"] += int((main_top[:, 1:] == targets[:, 1:]).sum())
        sums["main_correct"] += int((main_top == targets).sum())
        for i, moe in moe_layers.items():
            load[i] += moe.last_load.float()
    n_main, n_mtp = windows.shape[0] * (windows.shape[1] - 1), windows.shape[0] * (windows.shape[1] - 2)
    return {
        "sequences": windows.shape[0],
        "tokens_per_sequence": windows.shape[1] - 1,
        "main_loss": sums["main_nll"] / n_main,
        "mtp_loss": sums["mtp_nll"] / n_mtp,
        "main_top1": sums["main_correct"] / n_main,
        "mtp_positions": n_mtp,
        "mtp_agreement": sums["agree"] / n_mtp,
        "mtp_top1": sums["mtp_correct"] / n_mtp,
        "main_top1_same_targets": sums["main_correct_same"] / n_mtp,
        "expert_load": {str(i): (l / l.sum()).tolist() for i, l in load.items()},
    }


def balance_table(shares: dict[str, list[float]]) -> dict[str, dict]:
    out = {}
    for layer, s in shares.items():
        s = np.array(s)
        out[layer] = {"min_share": float(s.min()), "max_share": float(s.max()), "uniform": 1 / len(s),
                      "max_over_mean": float(s.max() * len(s)), "min_over_mean": float(s.min() * len(s))}
    return out


def gather(args: argparse.Namespace) -> dict:
    state = torch.load(args.state, map_location="cpu")
    config = DeepseekV3Config(**state["config"])
    config_path = os.path.join(args.out, "config.json")
    with open(config_path) as f:
        exported_config = json.load(f)
    for key, value in state["config"].items():
        if exported_config.get(key) != value:
            raise SystemExit(f"report: {config_path}: {key} is {exported_config.get(key)!r}, the state has {value!r}: export this state first")
    log = read_log(args.run, state["step"])
    if int(log[-1]["step"]) != state["step"]:
        print(f"report: warning: log.csv's last row up to the state is step {int(log[-1]['step'])}, the state is at step {state['step']}", file=sys.stderr)
    shares, load_steps = read_expert_load(args.run, state["step"], args.load_rows)
    plot_losses(log, os.path.join(args.out, "loss.png"))

    heldout = np.fromfile(os.path.join(args.data, "heldout.bin"), dtype=np.uint16)
    seq_len = args.seq_len or state["seq_len"]
    starts = np.linspace(0, len(heldout) - seq_len - 1, args.windows).astype(np.int64)
    windows = torch.from_numpy(np.stack([heldout[s : s + seq_len + 1] for s in starts]).astype(np.int64))
    trained = DeepseekV3ForCausalLM(config)
    trained.load_state_dict(state["model"])
    print(f"report: evaluating {args.windows} x {seq_len} held-out tokens, float32 and exported weights", file=sys.stderr)
    exported = load_exported_model(args.out)
    embedding = state["model"]["model.embed_tokens.weight"].numpy()
    if not np.array_equal(fp8.bf16_decode(fp8.bf16_encode(embedding)), exported.model.embed_tokens.weight.detach().numpy()):
        raise SystemExit(f"report: {args.out}/model.safetensors was not exported from {args.state} (embeddings differ): export it first")
    evaluation = {"float32": evaluate(trained, windows, args.chunk), "exported": evaluate(exported, windows, args.chunk)}

    train_args = state["args"]
    optimizer = state["optimizer"]["param_groups"]
    safetensors = os.path.join(args.out, "model.safetensors")
    return {
        "config": exported_config,
        "parameters": parameter_counts(config),
        "files": {
            "model_safetensors_bytes": os.path.getsize(safetensors),
            "folder_bytes": sum(os.path.getsize(os.path.join(args.out, n)) for n in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")),
        },
        "training": {
            "steps": state["step"], "planned_steps": train_args["steps"], "tokens": state["tokens"],
            "batch_size": train_args["batch_size"], "seq_len": state["seq_len"],
            "lr": train_args["lr"], "warmup": train_args["warmup"], "min_lr_ratio": train_args["min_lr_ratio"],
            "betas": optimizer[0]["betas"], "eps": optimizer[0]["eps"], "weight_decay": [g["weight_decay"] for g in optimizer],
            "grad_clip": train_args["grad_clip"], "mtp_weight": train_args["mtp_weight"], "bias_gamma": train_args["bias_gamma"],
            "aux_loss_alpha": config.aux_loss_alpha, "seed": train_args["seed"], "threads": train_args["threads"],
            "compute_seconds": state["elapsed_s"], "torch_version": torch.__version__,
        },
        "final_log_row": log[-1],
        "previous_log_step": log[-2]["step"] if len(log) > 1 else 0,
        "evaluation": evaluation,
        "expert_load": {"log_steps": load_steps, "training": balance_table(shares),
                        "heldout_exported": balance_table(evaluation["exported"]["expert_load"])},
    }


def markdown(d: dict) -> str:
    c, p, t, f = d["config"], d["parameters"], d["training"], d["files"]
    M = lambda n: f"{n / 1e6:.2f}M"  # noqa: E731
    mtp_layer = str(c["num_hidden_layers"])
    lines = ["## Architecture", "", "| | |", "| --- | --- |"]
    rows = [
        ("hidden size", c["hidden_size"]),
        ("layers", f"{c['num_hidden_layers']} ({c['first_k_dense_replace']} dense, intermediate {c['intermediate_size']}; "
                   f"{c['num_hidden_layers'] - c['first_k_dense_replace']} MoE) + 1 MTP layer"),
        ("attention heads", f"{c['num_attention_heads']} (MLA)"),
        ("q / kv LoRA rank", f"{c['q_lora_rank']} / {c['kv_lora_rank']}"),
        ("head dims: qk nope / qk rope / v", f"{c['qk_nope_head_dim']} / {c['qk_rope_head_dim']} / {c['v_head_dim']}"),
        ("routed experts", f"{c['n_routed_experts']} (intermediate {c['moe_intermediate_size']}), top-{c['num_experts_per_tok']} "
                           f"in {c['topk_group']} of {c['n_group']} groups, sigmoid scores, scaling {c['routed_scaling_factor']}"),
        ("shared experts", c["n_shared_experts"]),
        ("vocabulary", c["vocab_size"]),
        ("context", f"{c['rope_scaling']['original_max_position_embeddings']} trained, {c['max_position_embeddings']} "
                    f"with YaRN (factor {c['rope_scaling']['factor']})"),
        ("parameters, main model", f"{M(p['main_total'])} total ({M(p['embedding_and_head'])} embedding + head), {M(p['main_active'])} active per token"),
        ("parameters, MTP module", f"{M(p['mtp_total'])} more ({M(p['mtp_active'])} active), embedding and head shared"),
        ("model.safetensors", f"{f['model_safetensors_bytes'] / 1e6:.2f} MB (FP8 e4m3 linears with 128x128 block scales); "
                              f"folder {f['folder_bytes'] / 1e6:.2f} MB with config and tokenizer"),
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]

    planned = "" if t["steps"] == t["planned_steps"] else f" of {t['planned_steps']:,} planned"
    lines += ["", "## Training", ""]
    lines += [
        f"- {t['steps']:,} steps{planned}, "
        f"{t['tokens'] / 1e6:.2f}M tokens ({t['batch_size']} x {t['seq_len']} tokens per step), seed {t['seed']}.",
        f"- AdamW (betas {t['betas'][0]}, {t['betas'][1]}; eps {t['eps']:g}; weight decay {t['weight_decay'][0]} on matrices), "
        f"learning rate {t['lr']:g}: {t['warmup']} warm-up steps, then cosine to {t['lr'] * t['min_lr_ratio']:g} at step {t['planned_steps']:,}; "
        f"gradient clip {t['grad_clip']}.",
        f"- Loss: main cross-entropy + {t['mtp_weight']} x MTP cross-entropy + {t['aux_loss_alpha']:g} x sequence-wise balance loss; "
        f"expert bias update speed {t['bias_gamma']:g} (auxiliary-loss-free balancing).",
        f"- {t['compute_seconds'] / 60:.0f} minutes of training steps (evaluation excluded) on {t['threads']} CPU threads, "
        f"{t['tokens'] / t['compute_seconds']:.0f} tokens/s, torch {t['torch_version']}.",
    ]

    r, ef, ee = d["final_log_row"], d["evaluation"]["float32"], d["evaluation"]["exported"]
    ppl = lambda x: f"{x:.4f} (ppl {math.exp(x):.1f})"  # noqa: E731
    lines += ["", "## Loss", "", "![training and held-out loss](loss.png)", "",
              "| cross-entropy (nats/token) | main model | MTP module |", "| --- | --- | --- |",
              f"| train, mean over steps {int(d['previous_log_step']) + 1}-{int(r['step'])} | {ppl(r['train_loss'])} | {ppl(r['train_mtp_loss'])} |",
              f"| held-out, training's evaluation windows | {ppl(r['heldout_loss'])} | {ppl(r['heldout_mtp_loss'])} |",
              f"| held-out, {ef['sequences']} x {ef['tokens_per_sequence']} tokens, float32 weights | {ppl(ef['main_loss'])} | {ppl(ef['mtp_loss'])} |",
              f"| held-out, same windows, exported FP8/BF16 weights | {ppl(ee['main_loss'])} | {ppl(ee['mtp_loss'])} |"]

    steps = d["expert_load"]["log_steps"]
    lines += ["", "## Expert load balance", "",
              f"Share of routed token slots per expert, uniform = 1/{c['n_routed_experts']} = {1 / c['n_routed_experts']:.4f}. "
              f"Training: steps {steps[0]}-{steps[1]} "
              f"(expert_load.jsonl); held-out: the windows above, exported weights.", "",
              "| layer | min share | max share | max / mean | held-out min share | held-out max share | held-out max / mean |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for layer, b in d["expert_load"]["training"].items():
        h = d["expert_load"]["heldout_exported"][layer]
        name = f"{layer} (MTP)" if layer == mtp_layer else layer
        lines.append(f"| {name} | {b['min_share']:.4f} | {b['max_share']:.4f} | {b['max_over_mean']:.2f} | "
                     f"{h['min_share']:.4f} | {h['max_share']:.4f} | {h['max_over_mean']:.2f} |")

    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines += ["", "## MTP module", "",
              f"Measured in torch (tools/train/model.py) on {ef['sequences']} held-out windows of {ef['tokens_per_sequence']} tokens "
              f"({ef['mtp_positions']:,} positions). The MTP draft for token t(i+2) is made from the main model's final-normed hidden "
              "state h(i) and the embedding of the true t(i+1); it agrees when it equals the main model's own argmax for that token "
              "(in greedy speculative decoding t(i+1) is the model's own choice, so this approximates the draft acceptance rate).", "",
              "| | float32 weights | exported FP8/BF16 weights |", "| --- | --- | --- |",
              f"| MTP top-1 agreement with the main model | {pct(ef['mtp_agreement'])} | {pct(ee['mtp_agreement'])} |",
              f"| MTP top-1 accuracy (token after next) | {pct(ef['mtp_top1'])} | {pct(ee['mtp_top1'])} |",
              f"| main model top-1 accuracy (same tokens) | {pct(ef['main_top1_same_targets'])} | {pct(ee['main_top1_same_targets'])} |",
              f"| main model top-1 accuracy (every position) | {pct(ef['main_top1'])} | {pct(ee['main_top1'])} |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, help="state.pt written by train.py (copy it first if training still runs)")
    parser.add_argument("--run", required=True, help="run folder: log.csv, expert_load.jsonl")
    parser.add_argument("--data", required=True, help="the prepare.py folder (heldout.bin)")
    parser.add_argument("--out", required=True, help="the exported model folder; outputs are written here")
    parser.add_argument("--windows", type=int, default=16, help="held-out windows for the evaluation, spread evenly")
    parser.add_argument("--seq-len", type=int, default=0, help="tokens per window (0: the training length)")
    parser.add_argument("--chunk", type=int, default=4, help="windows per forward")
    parser.add_argument("--load-rows", type=int, default=4, help="expert_load.jsonl rows (log intervals) to average")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = gather(args)
    with open(os.path.join(args.out, "card_data.json"), "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    text = markdown(data)
    with open(os.path.join(args.out, "card_sections.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"report: wrote loss.png, card_data.json, card_sections.md into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
