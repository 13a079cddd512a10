// How often a GPU expert cache of S slots per MoE layer would miss, by eviction policy, on a model's
// own routing: the routed experts each decoded token chose (GenerateOptions.experts) are replayed
// through ExpertSlots (src/model/expert_slots.ts) layer by layer, one request per token, a fresh
// cache per prompt. Prompts alternate greedy and sampled (temperature 0.7). Prints, per slot count,
// the misses per expert access and the uploads per token of each policy.
//   npx tsx --import ./tools/register-raw.mjs tools/expert_cache_sim.ts public/models/<name> [--tokens N] [--json]

import { parseArgs } from 'node:util';
import { ExpertSlots, type EvictionPolicy } from '../src/model/expert_slots.ts';
import { createNodeEngine } from '../src/node.ts';

const { values, positionals } = parseArgs({ options: { tokens: { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: true });
const model = positionals[0];
if (!model) throw new Error('usage: tools/expert_cache_sim.ts <model folder> [--tokens N] [--json]');
const tokens = Number(values.tokens ?? 200);
const PROMPTS = ['In the beginning God created', 'And Jesus answered and said unto them,', 'def main():\n    ', 'The LORD is my shepherd;', 'import os\nimport sys\n', 'And it came to pass, when'];
const POLICIES: EvictionPolicy[] = ['frequency', 'lru'];

const engine = await createNodeEngine({ model });
const { n_routed_experts: E, num_experts_per_tok: K } = engine.info.config;
/** traces[prompt][token][layer] = the ids that token chose in that MoE layer. */
const traces: number[][][][] = [];
try {
  for (const [i, prompt] of PROMPTS.entries()) {
    const trace: number[][][] = [];
    const sampled = i % 2 === 1;
    for await (const chunk of engine.generate(prompt, { temperature: sampled ? 0.7 : 0, seed: i, maxTokens: tokens, ignoreEos: true, experts: true, speculative: false })) {
      for (const t of chunk.experts ?? []) trace.push(t.experts);
    }
    traces.push(trace);
    console.error(`[sim] prompt ${i + 1}/${PROMPTS.length}: ${trace.length} tokens routed`);
  }
} finally {
  await engine.unload();
}

const layers = traces[0]?.[0]?.length ?? 0;
const rows: { slots: number; policy: EvictionPolicy; miss_rate: number; uploads_per_token: number }[] = [];
for (let slots = 1; slots < E; slots++) {
  for (const policy of POLICIES) {
    let uploads = 0;
    let accesses = 0;
    let tokenCount = 0;
    for (const trace of traces) {
      const caches = Array.from({ length: layers }, () => new ExpertSlots({ experts: E, slots, policy }));
      for (const token of trace) {
        tokenCount++;
        token.forEach((ids, layer) => {
          accesses += ids.length;
          // Fewer slots than experts per token: the layer runs in passes of `slots` experts.
          for (let at = 0; at < ids.length; at += slots) uploads += caches[layer].place(ids.slice(at, at + slots)).uploads.length;
        });
      }
    }
    rows.push({ slots, policy, miss_rate: uploads / accesses, uploads_per_token: uploads / tokenCount });
  }
}

if (values.json) console.log(JSON.stringify({ model, experts: E, experts_per_token: K, moe_layers: layers, prompts: PROMPTS.length, tokens_per_prompt: tokens, rows }, null, 2));
else {
  console.log(`${model}: ${E} routed experts, ${K} per token, ${layers} MoE layers; ${PROMPTS.length} prompts x ${tokens} tokens`);
  console.log(`slots  ${POLICIES.map((p) => `${p} miss  uploads/token`.padStart(26)).join('')}`);
  for (let slots = 1; slots < E; slots++) {
    const cells = POLICIES.map((policy) => {
      const r = rows.find((x) => x.slots === slots && x.policy === policy)!;
      return `${r.miss_rate.toFixed(3).padStart(14)}${r.uploads_per_token.toFixed(2).padStart(12)}`;
    });
    console.log(`${String(slots).padStart(5)}  ${cells.join('')}`);
  }
}
