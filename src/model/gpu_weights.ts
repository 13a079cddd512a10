// The loaded checkpoint as the forward pass reads it: each Linear with its storage format (FP8 with
// block scales, or a plain bf16 / f32 matrix), routed experts as stacked buffers, and every norm
// weight in f32 (the release stores them BF16; the norm kernels read f32). The norm conversion runs
// on the GPU once, with the embedding-gather kernel over a one-row table: no bytes come back.

import type { DeepseekV3Config } from '../config.ts';
import { isMoeLayer } from '../config.ts';
import { CheckpointError, GpuLimitError, UnsupportedConfigError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { createEmbedGather, type EmbedDtype } from '../kernels/embed_gather.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import type { ExpertCache } from './expert_offload.ts';
import type { ExpertProjection, ExpertRange, ExpertWeightFormat, MlpBands, MlpWeights } from '../kernels/moe_experts.ts';
import type { PipelineCache } from '../gpu/pipeline_cache.ts';
import type { LoadedWeights } from './load_weights.ts';
import { scaleInvName } from './weights.ts';

/** Rows firstRow .. firstRow + rows - 1 of a Linear's W, in buffers of their own (and, for FP8, their block scales). */
export interface LinearPiece {
  readonly firstRow: number;
  readonly rows: number;
  readonly weight: GPUBuffer;
  /** fp8 only: the scales of these rows' 128-row blocks. */
  readonly weight_scale_inv?: GPUBuffer;
}

/** One Linear [out, in]: its format and its row pieces (one, unless W is larger than a binding). */
export interface LinearWeight {
  readonly name: string;
  readonly format: WeightFormat;
  readonly pieces: readonly LinearPiece[];
  readonly out: number;
  readonly in: number;
}

/** An embedding table [vocab, d] as stored, in row pieces (one, unless it is larger than a binding). */
export interface EmbeddingWeight {
  readonly name: string;
  readonly dtype: EmbedDtype;
  readonly vocab: number;
  readonly d: number;
  readonly pieces: readonly { readonly firstRow: number; readonly rows: number; readonly table: GPUBuffer }[];
}

/** The one piece of a Linear that its kernel binds whole (src/model/weight_split.ts never splits it). */
export function unsplit(w: LinearWeight): LinearPiece {
  if (w.pieces.length !== 1) throw new GpuLimitError(`${w.name} is split into ${w.pieces.length} buffers, but its kernel binds it whole`);
  return w.pieces[0];
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
  /**
   * Stacked over experts (placement.ts): one range of all n_routed_experts, or the expert ranges a
   * stack larger than a binding was split into, in order; empty when the experts are offloaded.
   */
  readonly experts: readonly ExpertRange[];
  /** Offloaded experts (LoadedWeights.offload): the layer's GPU cache, filled per step. */
  readonly cache?: ExpertCache;
  /**
   * One MLP of n_shared_experts * moe_intermediate_size (its projections in row bands when larger
   * than a binding), or absent when n_shared_experts is 0.
   */
  readonly shared_experts?: MlpWeights | MlpBands;
}

export interface LayerWeights {
  readonly index: number;
  readonly attention: AttentionWeights;
  /** Dense layers (index < first_k_dense_replace); its projections in row bands when larger than a binding. */
  readonly mlp?: MlpWeights | MlpBands;
  readonly moe?: MoeWeights;
}

export interface MtpWeights {
  readonly embed_tokens: EmbeddingWeight;
  readonly enorm: GPUBuffer;
  readonly hnorm: GPUBuffer;
  readonly eh_proj: LinearWeight;
  readonly layer: LayerWeights;
  readonly shared_head_norm: GPUBuffer;
  readonly shared_head_head: LinearWeight;
}

export interface ModelWeights {
  readonly config: DeepseekV3Config;
  readonly embed_tokens: EmbeddingWeight;
  readonly layers: readonly LayerWeights[];
  readonly norm: GPUBuffer;
  readonly lm_head: LinearWeight;
  /** Present when the checkpoint has an MTP layer and it was loaded. */
  readonly mtp?: MtpWeights;
  /** How every dense MLP and expert projection is stored (one format per model). */
  readonly expertWeights: ExpertWeightFormat;
  /** The most expert ranges any MoE layer's stack is split into (1: none split); sizes the scratch. */
  readonly expertRanges: number;
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
    const scales = format === 'fp8' ? loaded.pieces(scaleInvName(name)) : undefined;
    const pieces = loaded.pieces(name).map((p, k) => ({ firstRow: p.first, rows: p.count, weight: p.buffer, weight_scale_inv: scales?.[k].buffer }));
    return { name, format, pieces, out, in: inDim };
  };

  const embedding = (name: string): EmbeddingWeight => {
    const dtype = EMBED_DTYPE[dtypeOf(name) ?? ''];
    if (!dtype) throw new UnsupportedConfigError('torch_dtype', `${name} is ${dtypeOf(name)}; embeddings must be BF16, F16 or F32`);
    const pieces = loaded.pieces(name).map((p) => ({ firstRow: p.first, rows: p.count, table: p.buffer }));
    return { name, dtype, vocab: config.vocab_size, d: config.hidden_size, pieces };
  };

  // An MLP projection as the expert kernels read it: FP8 with its scales, or BF16 alone; piece k
  // of a stack split by expert ranges (the three projections of a stack split alike: equal sizes).
  const formats = new Set<ExpertWeightFormat>();
  const projection = (name: string, piece = 0): ExpertProjection => {
    const dtype = dtypeOf(name) ?? dtypeOf(name.replace('.experts.', '.experts.0.'));
    if (dtype === 'F8_E4M3') {
      formats.add('fp8');
      return { weight: loaded.pieces(name)[piece].buffer, weight_scale_inv: loaded.pieces(scaleInvName(name))[piece].buffer };
    }
    if (dtype === 'BF16') {
      formats.add('bf16');
      return { weight: loaded.pieces(name)[piece].buffer };
    }
    throw new UnsupportedConfigError('torch_dtype', `${name} is ${dtype}; the expert kernels read FP8 (F8_E4M3) or BF16 MLP weights: load with weights 'fp8' to quantise it`);
  };
  const mlp = (prefix: string, piece = 0): MlpWeights => ({
    gate_proj: projection(`${prefix}.gate_proj.weight`, piece),
    up_proj: projection(`${prefix}.up_proj.weight`, piece),
    down_proj: projection(`${prefix}.down_proj.weight`, piece),
  });
  // A dense MLP or the shared experts: whole, or, when a projection was split by rows, every
  // projection as its row bands (one piece is one band).
  const denseMlp = (prefix: string): MlpWeights | MlpBands => {
    const names = { gate_proj: `${prefix}.gate_proj.weight`, up_proj: `${prefix}.up_proj.weight`, down_proj: `${prefix}.down_proj.weight` };
    if (Object.values(names).every((name) => loaded.pieces(name).length === 1)) return mlp(prefix);
    const bands = (name: string) => loaded.pieces(name).map((p, k) => ({ ...projection(name, k), first: p.first, rows: p.count }));
    return { gate_proj: bands(names.gate_proj), up_proj: bands(names.up_proj), down_proj: bands(names.down_proj) };
  };
  const expertRanges = (prefix: string): ExpertRange[] =>
    loaded.pieces(`${prefix}.gate_proj.weight`).map((p, k) => ({ first: p.first, count: p.count, weights: mlp(prefix, k) }));

  /** A layer's experts: resident (its ranges), or its offload cache (their format from the CPU stacks' dtype). */
  const expertsOf = (L: number, prefix: string): { experts: ExpertRange[]; cache?: ExpertCache } => {
    const cache = loaded.offload?.caches.get(L);
    if (!cache) return { experts: expertRanges(prefix) };
    const dtype = dtypeOf(`${prefix}.0.gate_proj.weight`);
    if (dtype !== 'F8_E4M3' && dtype !== 'BF16') throw new UnsupportedConfigError('torch_dtype', `${prefix}.0.gate_proj.weight is ${dtype}; the expert kernels read FP8 (F8_E4M3) or BF16 MLP weights: load with weights 'fp8' to quantise it`);
    formats.add(dtype === 'BF16' ? 'bf16' : 'fp8');
    return { experts: [], cache };
  };

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
    if (!isMoeLayer(c, L)) return { index: L, attention, mlp: denseMlp(`${p}mlp`) };
    return {
      index: L,
      attention,
      moe: {
        gate: linear(`${p}mlp.gate.weight`, c.n_routed_experts, d),
        e_score_correction_bias: c.topk_method === 'noaux_tc' ? buffer(`${p}mlp.gate.e_score_correction_bias`) : undefined,
        ...expertsOf(L, `${p}mlp.experts`),
        shared_experts: c.n_shared_experts > 0 ? denseMlp(`${p}mlp.shared_experts`) : undefined,
      },
    };
  };

  try {
    const embed_tokens = embedding('model.embed_tokens.weight');
    const layers = Array.from({ length: c.num_hidden_layers }, (_, L) => layer(L));
    const norm = normF32('model.norm.weight', d);
    const lm_head = linear('lm_head.weight', c.vocab_size, d);
    let mtp: MtpWeights | undefined;
    const M = c.mtp_layer_index;
    if (M !== null && loaded.buffers.has(`model.layers.${M}.eh_proj.weight`)) {
      const p = `model.layers.${M}.`;
      mtp = {
        embed_tokens: embedding(`${p}embed_tokens.weight`),
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
    const moeLayers = [...layers, ...(mtp ? [mtp.layer] : [])].flatMap((l) => (l.moe ? [l.moe] : []));
    return {
      config,
      expertWeights: formats.has('bf16') ? 'bf16' : 'fp8',
      // an offloaded layer's passes keep y per pair, as a split stack's do
      expertRanges: Math.max(1, ...moeLayers.map((m) => (m.cache ? 2 : m.experts.length))),
      embed_tokens,
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
