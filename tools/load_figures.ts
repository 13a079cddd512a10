// Load and decode figures for a BF16 release in both weights modes, on this machine's adapter:
// a random checkpoint with Moonlight-16B-A3B's widths (hidden 2048, kv_lora 512, 16 heads, vocab
// cut to 32000, 1 dense + 1 MoE layer of 16 experts) generated in memory, loaded with weights
// 'fp8' (quantised on the GPU as it streams in) and 'bf16', then 8 prompt ids and 8 greedy tokens.
//   npx tsx --import ./tools/register-raw.mjs tools/load_figures.ts [--json]
import { openNodeGpu } from '../src/gpu/node.ts';
import { memoryDir } from '../src/io/sources.ts';
import { createGpuModel } from '../src/model/gpu_model.ts';
import { loadWeights, type WeightMode } from '../src/model/load_weights.ts';
import { generateCheckpoint } from './checkpoint/generate.ts';
import { ODD } from './checkpoint/presets.ts';

const config = {
  ...ODD,
  quantization_config: null,
  vocab_size: 32000,
  hidden_size: 2048,
  intermediate_size: 11264,
  moe_intermediate_size: 1408,
  num_hidden_layers: 2,
  first_k_dense_replace: 1,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  q_lora_rank: null,
  kv_lora_rank: 512,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  n_routed_experts: 16,
  n_shared_experts: 2,
  num_experts_per_tok: 6,
  n_group: 1,
  topk_group: 1,
  num_nextn_predict_layers: 0,
  max_position_embeddings: 4096,
  rope_scaling: null,
};

const started = performance.now();
const files = generateCheckpoint({ config, seed: 1, maxBytes: 2 ** 31 }).files;
const bytes = [...files.values()].reduce((s, f) => s + f.byteLength, 0);
console.error(`generated ${(bytes / 2 ** 20).toFixed(0)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`);
const dir = memoryDir('moonlight-widths-bf16', Object.fromEntries(files));
const gpu = await openNodeGpu();
const rows: Record<string, number | string>[] = [];
for (const weights of ['fp8', 'bf16'] as WeightMode[]) {
  const t0 = performance.now();
  const loaded = await loadWeights(gpu, dir, { weights });
  const loadS = (performance.now() - t0) / 1000;
  const model = createGpuModel(gpu, loaded);
  const cache = model.createCache(16);
  const plans = model.plans(cache);
  const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
  const greedy = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };
  const t1 = performance.now();
  let out = await model.forward(plans, prompt, 0, { sample: greedy });
  const prefillS = (performance.now() - t1) / 1000;
  const t2 = performance.now();
  for (let k = 0; k < 8; k++) out = await model.forward(plans, [out.id!], prompt.length + k, { sample: greedy });
  const decodeS = (performance.now() - t2) / 1000;
  rows.push({ weights, load_s: +loadS.toFixed(2), gpu_weight_mib: +(loaded.bytesOnGpu / 2 ** 20).toFixed(1), quantised_tensors: loaded.quantisedTensors, prefill_tok_s: +(8 / prefillS).toFixed(2), decode_tok_s: +(8 / decodeS).toFixed(2) });
  plans.destroy();
  cache.destroy();
  model.destroy();
  loaded.destroy();
}
if (process.argv.includes('--json')) console.log(JSON.stringify({ adapter: gpu.adapter, checkpoint_mib: +(bytes / 2 ** 20).toFixed(1), rows }, null, 2));
else console.table(rows);
gpu.destroy();
