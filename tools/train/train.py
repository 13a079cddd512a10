"""Train the scaled-down DeepSeek-V3 (model.py) on the prepare.py token streams.

    /usr/bin/python3 tools/train/train.py --data DATA --run RUN --preset target --steps N [--resume]

Seeded and resumable: the batch of step s depends only on (--seed, s), and RUN/state.pt (model,
optimizer, step, expert-bias state) is rewritten atomically every --save-every steps, on SIGTERM
or SIGINT, and at the end. RUN/log.csv gets train and held-out losses; RUN/expert_load.jsonl the
fraction of routed tokens per expert and layer over each log interval.
"""

import argparse
import csv
import json
import math
import os
import signal
import time

import numpy as np
import torch

import configs
from export import estimate_bytes
from model import DeepseekV3Config, DeepseekV3ForCausalLM

LOG_FIELDS = [
    "step", "tokens", "elapsed_s", "lr", "train_loss", "train_mtp_loss", "balance_loss",
    "heldout_loss", "heldout_mtp_loss", "tokens_per_s", "max_load_ratio",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder written by prepare.py")
    p.add_argument("--run", required=True, help="folder for state.pt, log.csv, expert_load.jsonl")
    p.add_argument("--preset", default="target", choices=sorted(configs.SEQ_LEN))
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps (sets the LR schedule)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decay ends at lr * this")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--mtp-weight", type=float, default=0.3, help="lambda of the MTP loss")
    p.add_argument("--bias-gamma", type=float, default=1e-3, help="bias update speed of the aux-loss-free balancing")
    p.add_argument("--log-every", type=int, default=50, help="held-out evaluation and log.csv row interval")
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--stop-after-minutes", type=float, default=0, help="save and exit after this wall time (0: no limit); --resume continues")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    return p.parse_args()


def learning_rate(args: argparse.Namespace, step: int) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_for_step(stream: np.ndarray, seed: int, step: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """[B, seq_len + 1] windows at random offsets, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seq_len - 1, size=batch_size)
    return torch.from_numpy(np.stack([stream[s : s + seq_len + 1] for s in starts]).astype(np.int64))


def heldout_batches(stream: np.ndarray, seq_len: int, windows: int, batch_size: int) -> list[torch.Tensor]:
    """Fixed windows spread evenly over the held-out stream (both sources are covered)."""
    starts = np.linspace(0, len(stream) - seq_len - 1, windows).astype(np.int64)
    rows = np.stack([stream[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    return [torch.from_numpy(rows[i : i + batch_size]) for i in range(0, windows, batch_size)]


@torch.no_grad()
def evaluate(model: DeepseekV3ForCausalLM, batches: list[torch.Tensor]) -> tuple[float, float]:
    main = mtp = 0.0
    for batch in batches:
        out = model(batch)
        main += float(out["main_loss"]) * len(batch)
        mtp += float(out["mtp_loss"]) * len(batch)
    n = sum(len(b) for b in batches)
    return main / n, mtp / n


def make_optimizer(model: DeepseekV3ForCausalLM, args: argparse.Namespace) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def save_state(path: str, model, optimizer, step: int, tokens: int, elapsed: float, args, seq_len: int, interval: dict, load_sums: list) -> None:
    state = {
        "interval": interval,  # the running log interval, so a resumed run logs the same rows
        "load_sums": load_sums,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "tokens": tokens,
        "elapsed_s": elapsed,
        "config": model.config.to_dict(),
        "preset": args.preset,
        "seq_len": seq_len,
        "args": vars(args),
    }
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)  # a crash mid-write never leaves a broken state.pt


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.run, exist_ok=True)
    state_path, log_path = os.path.join(args.run, "state.pt"), os.path.join(args.run, "log.csv")
    load_path = os.path.join(args.run, "expert_load.jsonl")

    with open(os.path.join(args.data, "corpus.json")) as f:
        vocab_size = json.load(f)["vocab_size"]
    train_stream = np.fromfile(os.path.join(args.data, "train.bin"), dtype=np.uint16)
    heldout_stream = np.fromfile(os.path.join(args.data, "heldout.bin"), dtype=np.uint16)
    seq_len = configs.SEQ_LEN[args.preset]

    torch.manual_seed(args.seed)
    step, tokens, elapsed = 0, 0, 0.0
    interval = {"loss": 0.0, "mtp": 0.0, "bal": 0.0, "n": 0, "tokens": 0, "time": 0.0}
    load_sums = None
    if args.resume:
        if not os.path.exists(state_path):
            raise SystemExit(f"train: --resume but {state_path} does not exist")
        state = torch.load(state_path, map_location="cpu")
        if state["preset"] != args.preset:
            raise SystemExit(f"train: {state_path} is preset {state['preset']}, not {args.preset}")
        model = DeepseekV3ForCausalLM(DeepseekV3Config(**state["config"]))
        model.load_state_dict(state["model"])
        optimizer = make_optimizer(model, args)
        optimizer.load_state_dict(state["optimizer"])
        step, tokens, elapsed = state["step"], state["tokens"], state["elapsed_s"]
        interval, load_sums = state["interval"], state["load_sums"]
        print(f"train: resumed {state_path} at step {step}")
    else:
        if os.path.exists(state_path):
            raise SystemExit(f"train: {state_path} exists: pass --resume, or choose another --run")
        model = DeepseekV3ForCausalLM(configs.model_config(args.preset, vocab_size))
        optimizer = make_optimizer(model, args)
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)
        with open(os.path.join(args.run, "config.json"), "w") as f:
            json.dump({"model": model.config.to_dict(), "seq_len": seq_len, "args": vars(args)}, f, indent=2)

    export_bytes = estimate_bytes(model.config)
    if args.preset == "target" and export_bytes > configs.MAX_SAFETENSORS_BYTES:
        raise SystemExit(f"train: the export would be {export_bytes:,} bytes, over {configs.MAX_SAFETENSORS_BYTES:,}")
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"train: {args.preset}: {n_params / 1e6:.2f}M parameters, export ~{export_bytes / 1e6:.2f} MB, "
        f"{len(train_stream):,} train tokens, {args.batch_size}x{seq_len} tokens/step, {args.threads} threads"
    )
    eval_batches = heldout_batches(heldout_stream, seq_len, args.eval_windows, args.batch_size)
    moe_layers = model.moe_layers()

    stop = {"signal": None}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.update(signal=signum))

    if load_sums is None:
        load_sums = [torch.zeros(model.config.n_routed_experts) for _ in moe_layers]
    session_start = time.time()
    while step < args.steps:
        started = time.time()
        lr = learning_rate(args, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch_for_step(train_stream, args.seed, step, args.batch_size, seq_len)
        out = model(batch)
        loss = out["main_loss"] + args.mtp_weight * out["mtp_loss"] + out["balance_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        for moe, load_sum in zip(moe_layers, load_sums):
            load_sum += moe.last_load.float()
            moe.update_bias(args.bias_gamma)
        step += 1
        step_time = time.time() - started
        elapsed += step_time
        tokens += batch.shape[0] * seq_len
        interval.update(
            loss=interval["loss"] + float(out["main_loss"]), mtp=interval["mtp"] + float(out["mtp_loss"]),
            bal=interval["bal"] + float(out["balance_loss"]), n=interval["n"] + 1,
            tokens=interval["tokens"] + batch.shape[0] * seq_len, time=interval["time"] + step_time,
        )

        if step % args.log_every == 0 or step == args.steps:
            heldout, heldout_mtp = evaluate(model, eval_batches)
            fractions = [(s / s.sum()).tolist() for s in load_sums]
            max_ratio = max(max(f) * len(f) for f in fractions)  # busiest expert vs a perfectly even share
            n = interval["n"]
            row = [step, tokens, round(elapsed, 1), f"{lr:.3e}", f"{interval['loss'] / n:.4f}", f"{interval['mtp'] / n:.4f}",
                   f"{interval['bal'] / n:.5f}", f"{heldout:.4f}", f"{heldout_mtp:.4f}",
                   round(interval["tokens"] / interval["time"]), f"{max_ratio:.2f}"]
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow(row)
            with open(load_path, "a") as f:
                f.write(json.dumps({"step": step, "layers": {str(i + model.config.first_k_dense_replace): fr for i, fr in enumerate(fractions)}}) + "\n")
            print(" ".join(f"{k}={v}" for k, v in zip(LOG_FIELDS, row)), flush=True)
            interval = {"loss": 0.0, "mtp": 0.0, "bal": 0.0, "n": 0, "tokens": 0, "time": 0.0}
            load_sums = [torch.zeros_like(s) for s in load_sums]

        out_of_time = args.stop_after_minutes and time.time() - session_start > 60 * args.stop_after_minutes
        if step % args.save_every == 0 or step == args.steps or stop["signal"] or out_of_time:
            save_state(state_path, model, optimizer, step, tokens, elapsed, args, seq_len, interval, load_sums)
        if stop["signal"] or out_of_time:
            print(f"train: stopped at step {step} ({'signal' if stop['signal'] else 'time limit'}); state saved, continue with --resume")
            return
    print(f"train: done, {step} steps, {tokens:,} tokens, {elapsed / 60:.1f} min of compute -> {state_path}")


if __name__ == "__main__":
    main()
