"""DeepSeek-V3 at small size in torch, for training: a second, independent implementation.

Follows src/model/MATH.md (sections cited as "math 4.4" etc.); module names are the Hugging
Face checkpoint's, so `state_dict()` keys are the released tensor names. The MTP module is
`model.layers[num_hidden_layers]`; it shares `model.embed_tokens` and `lm_head` with the main
model (the export writes them again under the MTP layer's names, as released).
"""

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DeepseekV3Config:
    """The architecture keys of config.json, with the Hugging Face names."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    first_k_dense_replace: int
    num_attention_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    max_position_embeddings: int
    rope_scaling: dict = field(default_factory=dict)
    routed_scaling_factor: float = 2.5
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    aux_loss_alpha: float = 1e-4  # weight of the sequence-wise balance loss
    num_nextn_predict_layers: int = 1
    initializer_range: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """math 4.2, in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_inv_freq(config: DeepseekV3Config) -> torch.Tensor:
    """math 4.3: theta^(-2i/dr), YaRN-blended whenever rope_scaling is given (as HF and the engine)."""
    dim, theta = config.qk_rope_head_dim, config.rope_theta
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    scaling = config.rope_scaling
    if not scaling:
        return inv
    L0, factor = scaling["original_max_position_embeddings"], scaling["factor"]

    def correction_dim(rotations: float) -> float:
        return dim * math.log(L0 / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(scaling["beta_fast"])), 0)
    high = min(math.ceil(correction_dim(scaling["beta_slow"])), dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    smooth = 1 - ramp
    return inv / factor * (1 - smooth) + inv * smooth


def softmax_scale(config: DeepseekV3Config) -> float:
    """math 4.4: dq^-0.5 * m^2, m = 0.1 * mscale_all_dim * ln(factor) + 1 under YaRN."""
    scale = (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5
    scaling = config.rope_scaling
    if scaling and scaling.get("mscale_all_dim") and scaling["factor"] > 1:
        m = 0.1 * scaling["mscale_all_dim"] * math.log(scaling["factor"]) + 1
        scale *= m * m
    return scale


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved pairs (x[2i], x[2i+1]) rotated by angle a_i (math 4.3). x [..., T, n, dr], cos/sin [T, dr/2]."""
    pairs = x.unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    """MLA with q and kv LoRA, naive form (math 4.4)."""

    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        self.c = c
        H, dq = c.num_attention_heads, c.qk_nope_head_dim + c.qk_rope_head_dim
        self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
        self.q_b_proj = nn.Linear(c.q_lora_rank, H * dq, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, H * (c.qk_nope_head_dim + c.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * c.v_head_dim, c.hidden_size, bias=False)
        self.scale = softmax_scale(c)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c = self.c
        B, T, _ = x.shape
        H, dn, dr, dv = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, T, H, dn + dr)
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        kv = self.kv_a_proj_with_mqa(x)  # [B, T, rkv + dr]
        latent, k_pe = kv.split([c.kv_lora_rank, dr], dim=-1)
        k_pe = apply_rope(k_pe.unsqueeze(2), cos, sin)  # [B, T, 1, dr], shared by all heads
        k_nope, v = self.kv_b_proj(self.kv_a_layernorm(latent)).view(B, T, H, dn + dv).split([dn, dv], dim=-1)
        query = torch.cat([q_nope, apply_rope(q_pe, cos, sin)], dim=-1).transpose(1, 2)  # [B, H, T, dq]
        key = torch.cat([k_nope, k_pe.expand(B, T, H, dr)], dim=-1).transpose(1, 2)  # [B, H, T, dq]
        scores = query @ key.transpose(-1, -2) * self.scale  # [B, H, T, T]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        probs = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
        out = (probs @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, H * dv)
        return self.o_proj(out)


class MLP(nn.Module):
    """math 4.5: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    """Sigmoid router with group-limited top-k; the bias only chooses experts (math 4.6)."""

    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        self.c = c
        self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.hidden_size))
        # Not learnt by gradient: the auxiliary-loss-free update (DeepSeekMoE bias balancing).
        self.register_buffer("e_score_correction_bias", torch.zeros(c.n_routed_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, d] -> (expert ids [N, K], weights [N, K], sigmoid scores [N, E])."""
        c = self.c
        scores = torch.sigmoid(x @ self.weight.t())  # [N, E]
        with torch.no_grad():
            biased = scores + self.e_score_correction_bias
            groups = biased.view(len(x), c.n_group, -1)
            group_scores = groups.topk(2, dim=-1).values.sum(-1)  # [N, G]
            kept = group_scores.topk(c.topk_group, dim=-1).indices
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
            biased = groups.masked_fill(~group_mask[..., None], float("-inf")).view(len(x), -1)
            expert_ids = biased.topk(c.num_experts_per_tok, dim=-1).indices  # [N, K]
        chosen = scores.gather(1, expert_ids)
        weights = chosen / chosen.sum(-1, keepdim=True) * c.routed_scaling_factor
        return expert_ids, weights, scores


class MoE(nn.Module):
    """Shared expert + routed experts. The routed experts run as three batched matmuls over
    tokens sorted by expert (each expert's rows padded to the busiest expert's count)."""

    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        self.c = c
        self.gate = MoEGate(c)
        self.experts = nn.ModuleList(MLP(c.hidden_size, c.moe_intermediate_size) for _ in range(c.n_routed_experts))
        self.shared_experts = MLP(c.hidden_size, c.n_shared_experts * c.moe_intermediate_size)
        self.last_load: torch.Tensor | None = None  # [E] tokens routed to each expert, last forward
        self.last_balance_loss: torch.Tensor | None = None

    def routed(self, x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_k w_k * Expert_{idx_k}(x) for x [N, d], vectorised over tokens and experts."""
        N, d = x.shape
        E, K = self.c.n_routed_experts, self.c.num_experts_per_tok
        flat_expert = expert_ids.reshape(-1)  # [N*K]
        order = torch.argsort(flat_expert)
        sorted_expert = flat_expert[order]
        token = order // K  # which token each sorted slot came from
        counts = torch.bincount(flat_expert, minlength=E)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(N * K, device=x.device) - starts[sorted_expert]  # row within its expert
        capacity = int(counts.max())
        packed = x.new_zeros(E, capacity, d)
        packed[sorted_expert, slot] = x[token]
        w_gate = torch.stack([e.gate_proj.weight for e in self.experts])  # [E, m, d]
        w_up = torch.stack([e.up_proj.weight for e in self.experts])  # [E, m, d]
        w_down = torch.stack([e.down_proj.weight for e in self.experts])  # [E, d, m]
        hidden = F.silu(packed @ w_gate.transpose(1, 2)) * (packed @ w_up.transpose(1, 2))  # [E, C, m]
        out = hidden @ w_down.transpose(1, 2)  # [E, C, d]
        contribution = out[sorted_expert, slot] * weights.reshape(-1)[order, None]
        self.last_load = counts.detach()
        return x.new_zeros(N, d).index_add(0, token, contribution)

    def balance_loss(self, expert_ids: torch.Tensor, scores: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """The sequence-wise balance loss (DeepSeek-V3 report eq. 17-20), averaged over sequences:
        alpha * sum_i f_i P_i, f_i = E/(K T) * #(tokens choosing i), P_i = mean_t s_it / sum_j s_jt."""
        E, K = self.c.n_routed_experts, self.c.num_experts_per_tok
        chosen = torch.zeros(B * T, E, device=scores.device).scatter_(1, expert_ids, 1.0).view(B, T, E)
        f = chosen.sum(1) * E / (K * T)  # [B, E]
        p = (scores / scores.sum(-1, keepdim=True)).view(B, T, E).mean(1)  # [B, E]
        return self.c.aux_loss_alpha * (f * p).sum(-1).mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        flat = x.reshape(B * T, d)
        expert_ids, weights, scores = self.gate(flat)
        self.last_balance_loss = self.balance_loss(expert_ids, scores, B, T)
        y = self.routed(flat, expert_ids, weights) + self.shared_experts(flat)
        return y.view(B, T, d)

    @torch.no_grad()
    def update_bias(self, gamma: float) -> None:
        """Auxiliary-loss-free balancing: b_e += gamma * sign(mean load - load_e)."""
        load = self.last_load.float()
        self.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)


class DecoderLayer(nn.Module):
    def __init__(self, c: DeepseekV3Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c.hidden_size, c.intermediate_size) if layer_idx < c.first_k_dense_replace else MoE(c)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class SharedHead(nn.Module):
    """`shared_head.norm`; `shared_head.head` is the main lm_head (shared, as released)."""

    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class MTPLayer(DecoderLayer):
    """math 7: x_i = eh_proj(cat(enorm(Emb(t_{i+1})), hnorm(h_i))), a full MoE decoder layer, shared_head."""

    def __init__(self, c: DeepseekV3Config, layer_idx: int):
        super().__init__(c, layer_idx)
        self.enorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.hnorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * c.hidden_size, c.hidden_size, bias=False)
        self.shared_head = SharedHead(c)


class DeepseekV3Model(nn.Module):
    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        layers = [DecoderLayer(c, i) for i in range(c.num_hidden_layers)]
        layers += [MTPLayer(c, c.num_hidden_layers + k) for k in range(c.num_nextn_predict_layers)]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class DeepseekV3ForCausalLM(nn.Module):
    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        if c.num_nextn_predict_layers != 1:
            raise ValueError("num_nextn_predict_layers: only depth 1 is implemented")
        if c.first_k_dense_replace >= c.num_hidden_layers:
            raise ValueError("first_k_dense_replace must leave at least one MoE layer")
        self.config = c
        self.model = DeepseekV3Model(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(c), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=std)

    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    def rope_tables(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.outer(torch.arange(T, dtype=torch.float32, device=self.inv_freq.device), self.inv_freq)
        return angles.cos(), angles.sin()

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> main model's h after the final norm [B, T, d]."""
        cos, sin = self.rope_tables(tokens.shape[1])
        h = self.model.embed_tokens(tokens)
        for layer in self.model.layers[: self.config.num_hidden_layers]:
            h = layer(h, cos, sin)
        return self.model.norm(h)

    def mtp_logits(self, h_normed: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
        """h_normed [B, T', d] (h_i) and next_tokens [B, T'] (t_{i+1}) -> logits for t_{i+2} [B, T', V]."""
        mtp = self.model.layers[self.config.num_hidden_layers]
        cos, sin = self.rope_tables(next_tokens.shape[1])
        x = mtp.eh_proj(torch.cat([mtp.enorm(self.model.embed_tokens(next_tokens)), mtp.hnorm(h_normed)], dim=-1))
        x = mtp(x, cos, sin)
        return self.lm_head(mtp.shared_head.norm(x))

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens [B, T+1]: t_0..t_T. Losses of the main model (predict t_1..t_T from t_0..t_{T-1}),
        of the MTP module (predict t_{i+2} from h_i and t_{i+1}) and the summed balance losses."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        h = self.hidden_states(inputs)
        logits = self.lm_head(h)
        main_loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        mtp_logits = self.mtp_logits(h[:, :-1], inputs[:, 1:])
        mtp_loss = F.cross_entropy(mtp_logits.flatten(0, 1), targets[:, 1:].flatten())
        balance_loss = sum(m.last_balance_loss for m in self.moe_layers())
        return {"main_loss": main_loss, "mtp_loss": mtp_loss, "balance_loss": balance_loss, "logits": logits, "mtp_logits": mtp_logits}
