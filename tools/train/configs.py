"""Model and training presets. `target` is the shipped checkpoint; `tiny` is for smoke tests."""

from model import DeepseekV3Config

SEQ_LEN = {"target": 256, "tiny": 64}
# The shipped folder must stay under 25 MB: model.safetensors (~24.6 MB for `target`, of which
# 16.8 MB are the four BF16 [8192, 256] embedding/head copies) plus the tokenizer (~0.2 MB).
MAX_SAFETENSORS_BYTES = 24_700_000


def yarn(seq_len: int, factor: float = 4.0) -> dict:
    """YaRN keys as released; original_max_position_embeddings is the training length."""
    return {
        "type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": seq_len,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    }


def model_config(preset: str, vocab_size: int) -> DeepseekV3Config:
    seq_len = SEQ_LEN[preset]
    if preset == "target":
        return DeepseekV3Config(
            vocab_size=vocab_size,
            hidden_size=256,
            intermediate_size=512,
            moe_intermediate_size=96,
            num_hidden_layers=5,
            first_k_dense_replace=1,
            num_attention_heads=4,
            q_lora_rank=128,
            kv_lora_rank=64,
            qk_nope_head_dim=32,
            qk_rope_head_dim=32,
            v_head_dim=32,
            n_routed_experts=16,
            n_shared_experts=1,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            max_position_embeddings=4 * seq_len,
            rope_scaling=yarn(seq_len),
        )
    if preset == "tiny":
        return DeepseekV3Config(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            moe_intermediate_size=32,
            num_hidden_layers=3,
            first_k_dense_replace=1,
            num_attention_heads=2,
            q_lora_rank=32,
            kv_lora_rank=32,
            qk_nope_head_dim=16,
            qk_rope_head_dim=8,
            v_head_dim=16,
            n_routed_experts=16,
            n_shared_experts=1,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            max_position_embeddings=4 * seq_len,
            rope_scaling=yarn(seq_len),
        )
    raise ValueError(f"unknown preset {preset!r}: target or tiny")
