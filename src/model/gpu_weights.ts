// The loaded checkpoint as the forward pass reads it: each Linear with its storage format (FP8 with
// block scales, or a plain bf16 / f32 matrix), routed experts as stacked buffers, and every norm
// weight in f32 (the release stores them BF16; the norm kernels read f32). The norm conversion runs
// on the GPU once, with the embedding-gather kernel over a one-row table: no bytes come back.

import type { DeepseekV3Config } from '../config.ts';
import { isMoeLayer } from '../config.ts';
import { CheckpointError, UnsupportedConfigError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { createEmbedGather, type EmbedDtype } from '../kernels/embed_gather.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import type { ExpertProjection, ExpertWeightFormat, MlpWeights } from '../kernels/moe_experts.ts';
import type { PipelineCache } from '../gpu/pipeline_cache.ts';
import type { LoadedWeights } from './load_weights.ts';
import { scaleInvName } from './weights.ts';

/** One Linear [out, in]: its buffer, its format and, for FP8, its block scales. */
export interface LinearWeight {
  readonly name: string;
  readonly format: WeightFormat;
  readonly weight: GPUBuffer;
  /** fp8 only. */
  readonly weight_scale_inv?: GPUBuffer;
  readonly out: number;
  readonly in: number;
}

export interface AttentionWeights {
  readonly input_layernorm: GPUBuffer;
  /** With q_lora_rank: q_a_proj, q_a_layernorm, q_b_proj; else q_proj. */
  readonly q_a_proj?: LinearWeight;
  readonly q_a_layernorm?: GPUBuffer;
  readonly q_b_proj?: LinearWeight;
  readonly q_proj?: LinearWeight;
  readonly kv_a_proj_with_mqa: LinearWeight;
  readonly kv_a_layernorm: GPUBuffer;
  /** [heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]: W_UK and W_UV of each head, read in place. */
  readonly kv_b_proj: LinearWeight;
  readonly o_proj: LinearWeight;
  readonly post_attention_layernorm: GPUBuffer;
}

export interface MoeWeights {
  /** The router [n_routed_experts, hidden_size]. */
  readonly gate: LinearWeight;
  /** DeepSeek-V3 (noaux_tc) only. */
  readonly e_score_correction_bias?: GPUBuffer;
  /** Stacked over experts (placement.ts). */
  readonly experts: MlpWeights;
  /** One MLP of n_shared_experts * moe_intermediate_size, or absent when n_shared_experts is 0. */
  readonly shared_experts?: MlpWeights;
}

export interface LayerWeights {
  readonly index: number;
  readonly attention: AttentionWeights;
  /** Dense layers (index < first_k_dense_replace). */
  readonly mlp?: MlpWeights;
  readonly moe?: MoeWeights;
}

export interface MtpWeights {
  readonly embed_tokens: GPUBuffer;
  readonly embedDtype: EmbedDtype;
  readonly enorm: GPUBuffer;
  readonly hnorm: GPUBuffer;
  readonly eh_proj: LinearWeight;
  readonly layer: LayerWeights;
  readonly shared_head_norm: GPUBuffer;
  readonly shared_head_head: LinearWeight;
}

export interface ModelWeights {
  readonly config: DeepseekV3Config;
  readonly embed_tokens: GPUBuffer;
  readonly embedDtype: EmbedDtype;
  readonly layers: readonly LayerWeights[];
  readonly norm: GPUBuffer;
  readonly lm_head: LinearWeight;
  /** Present when the checkpoint has an MTP layer and it was loaded. */
  readonly mtp?: MtpWeights;
  /** How every dense MLP and expert projection is stored (one format per model). */
  readonly expertWeights: ExpertWeightFormat;
  /** Free the f32 norm copies made here (the checkpoint buffers belong to LoadedWeights). */
  destroy(): void;
}

const EMBED_DTYPE: Record<string, EmbedDtype> = { BF16: 'bf16', F16: 'f16', F32: 'f32' };
const MATRIX_FORMAT: Record<string, WeightFormat> = { F8_E4M3: 'fp8', BF16: 'bf16', F32: 'f32' };

/**
 * Views of `loaded` for the forward pass. Throws UnsupportedConfigError for storage the kernels
 * do not read (an F16 matrix, or experts that are not FP8).
 */
export function modelWeights(gpu: Gpu, pipelines: PipelineCache, loaded: LoadedWeights): ModelWeights {
  const { config } = loaded;
  const owned: GPUBuffer[] = [];
  const dtypeOf = (name: string) => loaded.tensors.get(name)?.dtype; // as on the GPU (quantised at load or not)
  const buffer = (name: string): GPUBuffer => {
    const b = loaded.buffers.get(name);
    if (!b) throw new CheckpointError(`${name} is not loaded`);
    return b;
  };

  const gathers = new Map<EmbedDtype, ReturnType<typeof createEmbedGather>>();
  const zeroId = gpu.device.createBuffer({ label: 'norm_convert.id', size: 4, usage: GPUBufferUsage.STORAGE });
  const encoder = gpu.device.createCommandEncoder({ label: 'norm weights to f32' });
  const pass = encoder.beginComputePass();
  const calls: { destroy(): void }[] = [];

  /** A norm weight in f32: the F32 buffer itself, or a converted copy. */
  const normF32 = (name: string, width: number): GPUBuffer => {
    const dtype = EMBED_DTYPE[dtypeOf(name) ?? ''];
    if (!dtype) throw new UnsupportedConfigError('torch_dtype', `${name} is ${dtypeOf(name)}; norm weights must be BF16, F16 or F32`);
    if (dtype === 'f32') return buffer(name);
    let gather = gathers.get(dtype);
    if (!gather) gathers.set(dtype, (gather = createEmbedGather({ gpu, pipelines }, { dtype })));
    const out = gpu.device.createBuffer({ label: `${name} (f32)`, size: 4 * width, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    owned.push(out);
    // Row 0 of a one-row table [1, width] is the whole weight.
    const call = gather.prepare({ T: 1, vocab: 1, d: width, ids: zeroId, table: buffer(name), h: out, label: `${name} to f32` });
    call.encode(pass);
    calls.push(call);
    return out;
  };

  const linear = (name: string, out: number, inDim: number): LinearWeight => {
    const dtype = dtypeOf(name) ?? '';
    const format = MATRIX_FORMAT[dtype];
    if (!format) throw new UnsupportedConfigError('torch_dtype', `${name} is ${dtype}; Linear weights must be F8_E4M3 (with block scales), BF16 or F32`);
    return { name, format, weight: buffer(name), weight_scale_inv: format === 'fp8' ? buffer(scaleInvName(name)) : undefined, out, in: inDim };
  };

  // An MLP projection as the expert kernels read it: FP8 with its scales, or BF16 alone.
  const formats = new Set<ExpertWeightFormat>();
  const projection = (name: string): ExpertProjection => {
    const dtype = dtypeOf(name) ?? dtypeOf(name.replace('.experts.', '.experts.0.'));
    if (dtype === 'F8_E4M3') {
      formats.add('fp8');
      return { weight: buffer(name), weight_scale_inv: buffer(scaleInvName(name)) };
    }
    if (dtype === 'BF16') {
      formats.add('bf16');
      return { weight: buffer(name) };
    }
    throw new UnsupportedConfigError('torch_dtype', `${name} is ${dtype}; the expert kernels read FP8 (F8_E4M3) or BF16 MLP weights: load with weights 'fp8' to quantise it`);
  };
  const mlp = (prefix: string): MlpWeights => ({
    gate_proj: projection(`${prefix}.gate_proj.weight`),
    up_proj: projection(`${prefix}.up_proj.weight`),
    down_proj: projection(`${prefix}.down_proj.weight`),
  });

  const c = config;
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const layer = (L: number): LayerWeights => {
    const p = `model.layers.${L}.`;
    const a = `${p}self_attn.`;
    const attention: AttentionWeights = {
      input_layernorm: normF32(`${p}input_layernorm.weight`, d),
      ...(c.q_lora_rank === null
        ? { q_proj: linear(`${a}q_proj.weight`, H * c.qk_head_dim, d) }
        : {
            q_a_proj: linear(`${a}q_a_proj.weight`, c.q_lora_rank, d),
            q_a_layernorm: normF32(`${a}q_a_layernorm.weight`, c.q_lora_rank),
            q_b_proj: linear(`${a}q_b_proj.weight`, H * c.qk_head_dim, c.q_lora_rank),
          }),
      kv_a_proj_with_mqa: linear(`${a}kv_a_proj_with_mqa.weight`, c.latent_cache_dim, d),
      kv_a_layernorm: normF32(`${a}kv_a_layernorm.weight`, c.kv_lora_rank),
      kv_b_proj: linear(`${a}kv_b_proj.weight`, H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
      o_proj: linear(`${a}o_proj.weight`, d, H * c.v_head_dim),
      post_attention_layernorm: normF32(`${p}post_attention_layernorm.weight`, d),
    };
    if (!isMoeLayer(c, L)) return { index: L, attention, mlp: mlp(`${p}mlp`) };
    return {
      index: L,
      attention,
      moe: {
        gate: linear(`${p}mlp.gate.weight`, c.n_routed_experts, d),
        e_score_correction_bias: c.topk_method === 'noaux_tc' ? buffer(`${p}mlp.gate.e_score_correction_bias`) : undefined,
        experts: mlp(`${p}mlp.experts`),
        shared_experts: c.n_shared_experts > 0 ? mlp(`${p}mlp.shared_experts`) : undefined,
      },
    };
  };

  try {
    const embedDtype = EMBED_DTYPE[dtypeOf('model.embed_tokens.weight') ?? ''];
    if (!embedDtype) throw new UnsupportedConfigError('torch_dtype', `model.embed_tokens.weight is ${dtypeOf('model.embed_tokens.weight')}; embeddings must be BF16, F16 or F32`);
    const layers = Array.from({ length: c.num_hidden_layers }, (_, L) => layer(L));
    const norm = normF32('model.norm.weight', d);
    const lm_head = linear('lm_head.weight', c.vocab_size, d);
    let mtp: MtpWeights | undefined;
    const M = c.mtp_layer_index;
    if (M !== null && loaded.buffers.has(`model.layers.${M}.eh_proj.weight`)) {
      const p = `model.layers.${M}.`;
      const mtpEmbedDtype = EMBED_DTYPE[dtypeOf(`${p}embed_tokens.weight`) ?? ''] ?? embedDtype;
      mtp = {
        embed_tokens: buffer(`${p}embed_tokens.weight`),
        embedDtype: mtpEmbedDtype,
        enorm: normF32(`${p}enorm.weight`, d),
        hnorm: normF32(`${p}hnorm.weight`, d),
        eh_proj: linear(`${p}eh_proj.weight`, d, 2 * d),
        layer: layer(M),
        shared_head_norm: normF32(`${p}shared_head.norm.weight`, d),
        shared_head_head: linear(`${p}shared_head.head.weight`, c.vocab_size, d),
      };
    }
    if (formats.size > 1) throw new UnsupportedConfigError('torch_dtype', 'the MLP weights mix FP8 and BF16; the expert kernels of one model read one format');
    pass.end();
    gpu.device.queue.submit([encoder.finish()]);
    return {
      config,
      expertWeights: formats.has('bf16') ? 'bf16' : 'fp8',
      embed_tokens: buffer('model.embed_tokens.weight'),
      embedDtype,
      layers,
      norm,
      lm_head,
      mtp,
      destroy() {
        for (const b of owned) b.destroy();
        owned.length = 0;
      },
    };
  } catch (err) {
    for (const b of owned) b.destroy();
    throw err;
  } finally {
    // The params buffers may go once the conversion is submitted (destroy waits for queued work).
    for (const call of calls) call.destroy();
    zeroId.destroy();
  }
}
