// What `webmoe inspect` reports about a checkpoint: the config in brief, parameter counts,
// bytes by dtype, the latent cache against a per-head cache, and the tensor check. Reads only
// config.json and the safetensors headers, never the weights.

import { parseConfig, type DeepseekV3Config } from '../config.ts';
import { openCheckpoint, CONFIG_FILE, type Checkpoint } from '../io/checkpoint_files.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { WebmoeError } from '../errors.ts';
import { placeWeights, smallestWeightBinding, tensorsOnGpu, weightBytesOnGpu, type WeightMode } from './load_weights.ts';
import { weightBufferSize } from './placement.ts';
import { DEFAULT_PREFILL_CHUNK } from './gpu_model.ts';
import { planMemory, type MemoryPlan } from './memory_plan.ts';

/** The engine's defaults the memory plan assumes (src/runtime/engine.ts). */
const DEFAULT_CONTEXT = 4096;
const DEFAULT_CACHE_BUDGET = 512 * 2 ** 20;

/** WebGPU's default maxStorageBufferBindingSize, and what a browser gives unless asked: the plan inspect shows by default. */
export const DEFAULT_INSPECT_BINDING_BYTES = 128 * 2 ** 20;

/** How the weights of one mode are laid out at a binding limit, or why the loader would refuse them. */
/**
 * The loader's layout at a binding limit, or why it refuses it; either way the smallest limit the
 * weights could be laid out under, and the tensor whose piece sets it.
 */
export type BindingPlan = ({ buffers: number; split: string[]; pieces: number; largest_buffer: number } | { refused: string }) & {
  smallest_binding: { bytes: number; tensor: string };
};
import { checkTensors, countParameters, expectedTensors, latentCacheBytesPerToken, mhaCacheBytesPerToken, type TensorMismatch } from './weights.ts';

export interface InspectReport {
  source: string;
  layout: 'single' | 'sharded';
  files: string[];
  config: {
    model_type: string;
    hidden_size: number;
    num_hidden_layers: number;
    dense_layers: number;
    num_attention_heads: number;
    q_lora_rank: number | null;
    kv_lora_rank: number;
    qk_nope_head_dim: number;
    qk_rope_head_dim: number;
    v_head_dim: number;
    n_routed_experts: number;
    num_experts_per_tok: number;
    n_shared_experts: number;
    n_group: number;
    topk_group: number;
    vocab_size: number;
    max_position_embeddings: number;
    mtp_layers: number;
  };
  params_total: number;
  params_active: number;
  params_mtp: number;
  bytes_total: number;
  bytes_by_dtype: Record<string, number>;
  /** 'fp8': the release's Linears are block-scaled e4m3; 'bf16': unquantised (BF16, F16 or F32). */
  release_weights: 'fp8' | 'bf16';
  /** Bytes of the weight buffers on the GPU with weights 'fp8' (the default) and 'bf16' (MTP included). */
  gpu_weight_bytes: { fp8: number; bf16: number };
  /** The weights at a storage binding limit (`binding_limit_bytes`): split tensors and pieces, per mode. */
  binding_limit_bytes: number;
  binding_plan: { fp8: BindingPlan; bf16: BindingPlan };
  /** GPU bytes at the engine's defaults (or --max-context): weights, one session's latent cache, its plans; per mode. */
  /** offloaded: weights fp8 with the routed experts in CPU memory and one per MoE layer on the GPU (the least GPU memory the model runs in). */
  memory_plan: { max_context: number; fp8?: MemoryPlan; bf16?: MemoryPlan; offloaded?: MemoryPlan };
  /** Bytes per cached value the cache figures assume (2: bf16, as the official deployment caches). */
  cache_bytes_per_value: number;
  latent_cache_bytes_per_token: number;
  mha_cache_bytes_per_token: number;
  missing: string[];
  unexpected: string[];
  mismatched: TensorMismatch[];
}

export async function inspectCheckpoint(
  dir: CheckpointDir,
  options: { cacheBytesPerValue?: number; bindingLimitBytes?: number; maxContext?: number; signal?: AbortSignal } = {},
): Promise<InspectReport> {
  return checkpointReport(await openCheckpoint(dir, { signal: options.signal }), options);
}

/** The report of a checkpoint already opened. */
export function checkpointReport(checkpoint: Checkpoint, options: { cacheBytesPerValue?: number; bindingLimitBytes?: number; maxContext?: number } = {}): InspectReport {
  const dir = checkpoint.dir;
  const config = parseConfig(checkpoint.configText, `${dir.description}/${CONFIG_FILE}`);
  const expected = expectedTensors(config);
  const { missing, unexpected, mismatched } = checkTensors(expected, checkpoint.tensors);
  const params = countParameters(config);
  const perValue = options.cacheBytesPerValue ?? 2;
  const limit = options.bindingLimitBytes ?? DEFAULT_INSPECT_BINDING_BYTES;
  return {
    source: dir.description,
    layout: checkpoint.layout,
    files: [...checkpoint.files],
    config: brief(config),
    params_total: params.total,
    params_active: params.activePerToken,
    params_mtp: params.mtp,
    bytes_total: checkpoint.totalBytes,
    bytes_by_dtype: { ...checkpoint.bytesByDtype },
    release_weights: config.quantization_config === null ? 'bf16' : 'fp8',
    gpu_weight_bytes: gpuWeightBytes(checkpoint, expected),
    binding_limit_bytes: limit,
    binding_plan: { fp8: bindingPlan(checkpoint, expected, 'fp8', limit), bf16: bindingPlan(checkpoint, expected, 'bf16', limit) },
    memory_plan: memoryPlans(checkpoint, config, limit, options.maxContext ?? Math.min(config.max_position_embeddings, DEFAULT_CONTEXT)),
    cache_bytes_per_value: perValue,
    latent_cache_bytes_per_token: latentCacheBytesPerToken(config, perValue),
    mha_cache_bytes_per_token: mhaCacheBytesPerToken(config, perValue),
    missing,
    unexpected,
    mismatched,
  };
}

function gpuWeightBytes(checkpoint: Checkpoint, expected: ReturnType<typeof expectedTensors>): InspectReport['gpu_weight_bytes'] {
  const tensors = [...checkpoint.tensors.values()];
  const bytes = (mode: WeightMode) => weightBytesOnGpu(tensorsOnGpu(tensors, expected, mode).onGpu);
  return { fp8: bytes('fp8'), bf16: bytes('bf16') };
}

/** The loader's own layout (placeWeights) of a mode's weights at `limit`. */
function bindingPlan(checkpoint: Checkpoint, expected: ReturnType<typeof expectedTensors>, mode: WeightMode, limit: number): BindingPlan {
  const { onGpu } = tensorsOnGpu([...checkpoint.tensors.values()], expected, mode);
  const smallest_binding = smallestWeightBinding(onGpu);
  try {
    const placed = placeWeights(onGpu, limit);
    const split = [...new Set(placed.flatMap((wb) => (wb.piece ? [wb.piece.of] : [])))];
    return {
      buffers: placed.length,
      split,
      pieces: placed.filter((wb) => wb.piece).length,
      largest_buffer: Math.max(...placed.map((wb) => weightBufferSize(wb.byteLength))),
      smallest_binding,
    };
  } catch (err) {
    if (err instanceof WebmoeError) return { refused: err.message, smallest_binding };
    throw err;
  }
}

/** The memory plan of each mode (absent where the layout is refused: binding_plan says why). */
function memoryPlans(checkpoint: Checkpoint, config: DeepseekV3Config, bindingLimit: number, maxContext: number): InspectReport['memory_plan'] {
  const tensors = [...checkpoint.tensors.values()];
  const plan = (weights: WeightMode, expertSlots?: number): MemoryPlan | undefined => {
    try {
      return planMemory({ config, tensors, weights, maxContext, prefillChunk: DEFAULT_PREFILL_CHUNK, cacheBudgetBytes: DEFAULT_CACHE_BUDGET, bindingLimit, maxBufferSize: Infinity, expertSlots });
    } catch (err) {
      if (err instanceof WebmoeError) return undefined;
      throw err;
    }
  };
  const offloaded = plan('fp8', 1);
  return { max_context: maxContext, fp8: plan('fp8'), bf16: plan('bf16'), ...(offloaded?.offload ? { offloaded } : {}) };
}

function brief(c: DeepseekV3Config): InspectReport['config'] {
  return {
    model_type: c.model_type,
    hidden_size: c.hidden_size,
    num_hidden_layers: c.num_hidden_layers,
    dense_layers: Math.min(c.first_k_dense_replace, c.num_hidden_layers),
    num_attention_heads: c.num_attention_heads,
    q_lora_rank: c.q_lora_rank,
    kv_lora_rank: c.kv_lora_rank,
    qk_nope_head_dim: c.qk_nope_head_dim,
    qk_rope_head_dim: c.qk_rope_head_dim,
    v_head_dim: c.v_head_dim,
    n_routed_experts: c.n_routed_experts,
    num_experts_per_tok: c.num_experts_per_tok,
    n_shared_experts: c.n_shared_experts,
    n_group: c.n_group,
    topk_group: c.topk_group,
    vocab_size: c.vocab_size,
    max_position_embeddings: c.max_position_embeddings,
    mtp_layers: c.num_nextn_predict_layers,
  };
}

function memoryLines(r: InspectReport, size: (bytes: number) => string): string[] {
  const modes: WeightMode[] = r.release_weights === 'bf16' ? ['fp8', 'bf16'] : ['fp8'];
  return modes.flatMap((mode) => {
    const p = r.memory_plan[mode];
    if (!p) return [];
    return [`  GPU memory, weights ${mode}, one session of ${r.memory_plan.max_context} positions (--max-context): ${size(p.oneSessionBytes)} = weights ${size(p.weightBytes)} + latent cache ${size(p.sessionCacheBytes)} + plans ${size(p.activationBytes)}`];
  }).concat(offloadedLine(r, size));
}

/** The least GPU memory the model runs in: the routed experts in CPU memory, one per layer on the GPU. */
function offloadedLine(r: InspectReport, size: (bytes: number) => string): string[] {
  const p = r.memory_plan.offloaded;
  if (!p?.offload) return [];
  return [`  GPU memory with the routed experts in CPU memory (${size(p.offload.hostBytes)}) and one per MoE layer on the GPU (--expert-slots 1, the least; --gpu-budget-mib picks the most that fit): ${size(p.oneSessionBytes)}`];
}

function formatPlan(mode: WeightMode, plan: BindingPlan): string {
  const floor = `loads down to ${(plan.smallest_binding.bytes / 2 ** 20).toFixed(2)} MiB bindings, set by ${plan.smallest_binding.tensor}`;
  if ('refused' in plan) return `weights ${mode} refused: ${plan.refused} (${floor})`;
  const largest = `largest ${(plan.largest_buffer / 2 ** 20).toFixed(1)} MiB; ${floor}`;
  if (plan.split.length === 0) return `weights ${mode}: ${plan.buffers} buffers, none split (${largest})`;
  return `weights ${mode}: ${plan.buffers} buffers, ${plan.split.length} tensor(s) split into ${plan.pieces} pieces (${largest})`;
}

/** The report as a person reads it. */
export function formatInspectReport(r: InspectReport): string {
  const c = r.config;
  const n = (x: number) => x.toLocaleString('en-US');
  const size = (bytes: number) => (bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(2)} GiB` : bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(2)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`);
  const lines = [
    `${r.source} (${r.layout}: ${r.files.length} file${r.files.length === 1 ? '' : 's'})`,
    `  ${c.model_type}: hidden ${c.hidden_size}, ${c.num_hidden_layers} layers (${c.dense_layers} dense), ${c.num_attention_heads} heads, vocab ${n(c.vocab_size)}, context ${n(c.max_position_embeddings)}`,
    `  MLA: q_lora_rank ${c.q_lora_rank ?? 'none (q_proj)'}, kv_lora_rank ${c.kv_lora_rank}, head dims nope ${c.qk_nope_head_dim} + rope ${c.qk_rope_head_dim}, v ${c.v_head_dim}`,
    `  MoE: ${c.n_routed_experts} routed experts, top-${c.num_experts_per_tok} in ${c.topk_group} of ${c.n_group} groups, ${c.n_shared_experts} shared; MTP layers: ${c.mtp_layers}`,
    `  parameters: ${n(r.params_total)} total, ${n(r.params_active)} active per token, ${n(r.params_mtp)} in the MTP module`,
    `  bytes: ${size(r.bytes_total)} (${Object.entries(r.bytes_by_dtype).map(([d, b]) => `${d} ${size(b)}`).join(', ')})`,
    r.release_weights === 'fp8'
      ? `  weights: an FP8 release (e4m3, 128x128 block scales): ${size(r.gpu_weight_bytes.fp8)} on the GPU`
      : `  weights: a BF16 release (no quantization_config): ${size(r.gpu_weight_bytes.fp8)} on the GPU quantised to FP8 at load (--weights fp8, the default), ${size(r.gpu_weight_bytes.bf16)} kept BF16 (--weights bf16)`,
    `  GPU bindings of ${size(r.binding_limit_bytes)} (--max-binding-mib): ${formatPlan('fp8', r.binding_plan.fp8)}${r.release_weights === 'bf16' ? `; ${formatPlan('bf16', r.binding_plan.bf16)}` : ''}`,
    ...memoryLines(r, size),
    `  KV cache per token (${r.cache_bytes_per_value}-byte values): latent ${n(r.latent_cache_bytes_per_token)} B vs multi-head ${n(r.mha_cache_bytes_per_token)} B (${(r.mha_cache_bytes_per_token / r.latent_cache_bytes_per_token).toFixed(1)}x smaller)`,
  ];
  const list = (names: string[]) => names.slice(0, 10).join(', ') + (names.length > 10 ? `, ... (${names.length})` : '');
  if (r.missing.length) lines.push(`  missing tensors (${r.missing.length}): ${list(r.missing)}`);
  if (r.unexpected.length) lines.push(`  unexpected tensors (${r.unexpected.length}): ${list(r.unexpected)}`);
  for (const m of r.mismatched.slice(0, 10)) lines.push(`  mismatched: ${m.name}: expected ${m.expected.dtype} [${m.expected.shape.join(', ')}], found ${m.actual.dtype} [${m.actual.shape.join(', ')}]`);
  if (!r.missing.length && !r.unexpected.length && !r.mismatched.length) lines.push('  tensors: all present, none unexpected');
  return lines.join('\n');
}
