"""tools/train/model.py's main model as one incremental step that torch.onnx.export can trace.

    step(input_ids [1, T], past k/v of P positions per layer) -> (logits of the last row [1, V], k/v of P + T positions)

The same math as model.py (src/model/MATH.md), batch 1, with two changes that tracing needs and
that leave every value the same:
- a k/v cache: attention over the P cached positions and the T new ones, RoPE at positions P..P+T-1
  (model.py recomputes the whole sequence from position 0 every forward);
- the routed experts as a gather of the chosen experts' weights and one batched matmul per
  projection: model.py packs tokens by expert with a capacity `int(counts.max())`, which a trace
  would freeze to the dummy input's value. Both compute sum_k w_k * Expert_{idx_k}(x) over the same
  chosen experts; `check_against_model` in export_onnx.py compares the two on real prompts.

Every weight is a buffer named by `WeightTable`, laid out as the graph uses it (Linears transposed
to [in, out], experts stacked): those become the graph's initializers, filled from the checkpoint
by the page (tools/peer/README.md).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from model import DeepseekV3ForCausalLM, softmax_scale  # noqa: E402


@dataclass
class Initializer:
    """One graph initializer: the checkpoint tensors it is made of, dequantised to float32,
    each transposed when `transpose`, then concatenated (a stack of experts)."""

    name: str
    sources: list[str]
    transpose: bool
    shape: list[int] = field(default_factory=list)


class WeightTable(nn.Module):
    """The step's weights as buffers (names must be identifiers), with the table of where each comes from."""

    def __init__(self, model: DeepseekV3ForCausalLM):
        super().__init__()
        self.model_state = model.state_dict()
        self.initializers: dict[str, Initializer] = {}  # buffer name -> what fills it

    def add(self, name: str, sources: list[str], transpose: bool) -> torch.Tensor:
        parts = [self.model_state[s].float() for s in sources]
        parts = [p.t().contiguous() if transpose else p for p in parts]
        value = parts[0].clone() if len(parts) == 1 else torch.stack(parts)
        buffer = name.replace(".", "_")
        self.register_buffer(buffer, value)
        self.initializers[buffer] = Initializer(name, sources, transpose, list(value.shape))
        return getattr(self, buffer)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """model.apply_rope (interleaved pairs, math 4.3) with a reshape for its `unflatten`, which
    torch 1.13 cannot export. x [T, n, dr], cos/sin [T, dr/2]."""
    pairs = x.reshape(x.shape[0], x.shape[1], -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """math 4.2, as model.RMSNorm."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class CachedDecoder(nn.Module):
    def __init__(self, model: DeepseekV3ForCausalLM):
        super().__init__()
        c = self.c = model.config
        self.w = WeightTable(model)
        w = self.w.add
        self.scale = softmax_scale(c)
        self.register_buffer("inv_freq", model.inv_freq.clone())
        self.embed = w("model.embed_tokens.weight", ["model.embed_tokens.weight"], False)  # [V, d]
        self.layers = []
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            L = {name: w(p + name + ".weight", [p + name + ".weight"], "_proj" in name) for name in (
                "input_layernorm", "post_attention_layernorm", "self_attn.q_a_proj", "self_attn.q_a_layernorm",
                "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.kv_a_layernorm",
                "self_attn.kv_b_proj", "self_attn.o_proj")}  # *_proj: [in, out]
            mlps = ["mlp"] if i < c.first_k_dense_replace else ["mlp.shared_experts"]
            for mlp in mlps:
                for proj in ("gate_proj", "up_proj", "down_proj"):
                    L[f"{mlp}.{proj}"] = w(f"{p}{mlp}.{proj}.weight", [f"{p}{mlp}.{proj}.weight"], True)
            if i >= c.first_k_dense_replace:
                L["gate"] = w(p + "mlp.gate.weight", [p + "mlp.gate.weight"], True)  # [d, E]
                L["bias"] = w(p + "mlp.gate.e_score_correction_bias", [p + "mlp.gate.e_score_correction_bias"], False)
                for proj in ("gate_proj", "up_proj", "down_proj"):  # [E, in, out]
                    experts = [f"{p}mlp.experts.{e}.{proj}.weight" for e in range(c.n_routed_experts)]
                    L[f"experts.{proj}"] = w(f"{p}mlp.experts.{proj}", experts, True)
            self.layers.append(L)
        self.norm = w("model.norm.weight", ["model.norm.weight"], False)
        self.lm_head = w("lm_head.weight", ["lm_head.weight"], True)  # [d, V]

    def attention(self, L: dict, x: torch.Tensor, cos, sin, past_k, past_v):
        """MLA, naive form (math 4.4) over the cache. x [T, d]; past_k [1, H, P, dq], past_v [1, H, P, dv]."""
        c, eps = self.c, self.c.rms_norm_eps
        T = x.shape[0]
        H, dn, dr, dv = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        q = (rms_norm(x @ L["self_attn.q_a_proj"], L["self_attn.q_a_layernorm"], eps) @ L["self_attn.q_b_proj"]).view(T, H, dn + dr)
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        latent, k_pe = (x @ L["self_attn.kv_a_proj_with_mqa"]).split([c.kv_lora_rank, dr], dim=-1)
        k_pe = apply_rope(k_pe.unsqueeze(1), cos, sin)  # [T, 1, dr], shared by all heads
        k_nope, v = (rms_norm(latent, L["self_attn.kv_a_layernorm"], eps) @ L["self_attn.kv_b_proj"]).view(T, H, dn + dv).split([dn, dv], dim=-1)
        query = torch.cat([q_nope, apply_rope(q_pe, cos, sin)], dim=-1).transpose(0, 1).unsqueeze(0)  # [1, H, T, dq]
        key = torch.cat([k_nope, k_pe.expand(T, H, dr)], dim=-1).transpose(0, 1).unsqueeze(0)  # [1, H, T, dq]
        keys = torch.cat([past_k, key], dim=2)  # [1, H, P+T, dq]
        values = torch.cat([past_v, v.transpose(0, 1).unsqueeze(0)], dim=2)  # [1, H, P+T, dv]
        P = past_k.shape[2]
        scores = query @ keys.transpose(-1, -2) * self.scale  # [1, H, T, P+T]
        # Row i is position P + i: it sees keys 0..P+i.
        future = torch.arange(P + T)[None, :] > (torch.arange(T) + P)[:, None]
        probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        out = (probs @ values)[0].transpose(0, 1).reshape(T, H * dv)
        return out @ L["self_attn.o_proj"], keys, values

    def mlp(self, L: dict, name: str, x: torch.Tensor) -> torch.Tensor:
        return (F.silu(x @ L[f"{name}.gate_proj"]) * (x @ L[f"{name}.up_proj"])) @ L[f"{name}.down_proj"]

    def moe(self, L: dict, x: torch.Tensor) -> torch.Tensor:
        """math 4.6 (model.MoEGate, model.MoE) for x [N, d]."""
        c = self.c
        N = x.shape[0]
        scores = torch.sigmoid(x @ L["gate"])  # [N, E]
        groups = (scores + L["bias"]).view(N, c.n_group, -1)  # the bias only chooses experts
        group_scores = groups.topk(2, dim=-1).values.sum(-1)  # [N, G]: sum of each group's top 2
        kth = group_scores.topk(c.topk_group, dim=-1).values[:, -1:]
        kept = group_scores >= kth  # the topk_group best groups (a comparison: no ScatterElements)
        biased = groups.masked_fill(~kept[..., None], float("-inf")).view(N, -1)
        expert_ids = biased.topk(c.num_experts_per_tok, dim=-1).indices  # [N, K]
        chosen = scores.gather(1, expert_ids)
        weights = chosen / chosen.sum(-1, keepdim=True) * c.routed_scaling_factor  # [N, K]
        rows = x[:, None, None, :]  # [N, 1, 1, d] against each token's K experts
        hidden = F.silu(rows @ L["experts.gate_proj"][expert_ids]) * (rows @ L["experts.up_proj"][expert_ids])  # [N, K, 1, m]
        out = (hidden @ L["experts.down_proj"][expert_ids])[:, :, 0, :]  # [N, K, d]
        return (out * weights[..., None]).sum(1) + self.mlp(L, "mlp.shared_experts", x)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        """input_ids [1, T] int64; past: past_key.0, past_value.0, ... -> logits [1, V], present_key.0, present_value.0, ..."""
        c, eps = self.c, self.c.rms_norm_eps
        T, P = input_ids.shape[1], past[0].shape[2]
        angles = (torch.arange(T) + P).float()[:, None] * self.inv_freq[None, :]  # [T, dr/2]
        cos, sin = angles.cos(), angles.sin()
        h = self.embed[input_ids[0]]  # [T, d]
        present = []
        for i, L in enumerate(self.layers):
            attn, keys, values = self.attention(L, rms_norm(h, L["input_layernorm"], eps), cos, sin, past[2 * i], past[2 * i + 1])
            present += [keys, values]
            h = h + attn
            x = rms_norm(h, L["post_attention_layernorm"], eps)
            h = h + (self.mlp(L, "mlp", x) if i < c.first_k_dense_replace else self.moe(L, x))
        logits = rms_norm(h[-1:], self.norm, eps) @ self.lm_head  # [1, V]
        return (logits, *present)

    def empty_cache(self) -> list[torch.Tensor]:
        c = self.c
        H, dq = c.num_attention_heads, c.qk_nope_head_dim + c.qk_rope_head_dim
        return [torch.zeros(1, H, 0, dq if j % 2 == 0 else c.v_head_dim) for _ in range(c.num_hidden_layers) for j in range(2)]


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """past_key.0, past_value.0, ... (prefix 'past') or present_key.0, ... ('present')."""
    return [f"{prefix}_{kind}.{i}" for i in range(num_layers) for kind in ("key", "value")]

