// The decode benchmark (src/bench/decode_report.ts, as `webmoe bench --decode` runs it) of one
// checkpoint at expert slots = all resident (no expertSlots), 50%, 25% and 1 of n_routed_experts,
// greedy, plain and MTP, in this process on one device; prints a markdown table of tok/s, the
// caches' hit rate and uploads per token, and the bytes model's ms per token beside the measured.
//   npx tsx --import ./tools/register-raw.mjs tools/offload_sweep.ts public/models/<name> [--max-tokens N] [--runs N] [--prompt TEXT]... [--quick] [--json]
// (npm run bench:offload -- public/models/<name> ...)
//
// Two predictions per row: the bytes model's (the resident step's bytes floor + the uploads at the
// measured upload bandwidth, offload_report.ts), and the resident row's measured ms per token +
// the same uploads, which on an adapter far from its floor (SwiftShader) is the one to compare.

import { parseArgs } from 'node:util';
import { runDecodeReport, type DecodeReport } from '../src/bench/decode_report.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { openCheckpoint } from '../src/io/checkpoint_files.ts';
import { nodeModelDir } from '../src/node.ts';
import { createLocalEngine } from '../src/runtime/engine.ts';

const { values, positionals } = parseArgs({
  options: { 'max-tokens': { type: 'string' }, runs: { type: 'string' }, prompt: { type: 'string', multiple: true }, quick: { type: 'boolean' }, json: { type: 'boolean' } },
  allowPositionals: true,
});
const model = positionals[0];
if (!model) throw new Error('usage: tools/offload_sweep.ts <model folder> [--max-tokens N] [--runs N] [--prompt TEXT]... [--quick] [--json]');
const maxTokens = Number(values['max-tokens'] ?? 32);
const runs = Number(values.runs ?? 1);
if (!(Number.isInteger(maxTokens) && maxTokens >= 2)) throw new Error(`--max-tokens must be an integer >= 2 (one decode step at least), got ${values['max-tokens']}`);
if (!(Number.isInteger(runs) && runs >= 1)) throw new Error(`--runs must be a positive integer, got ${values.runs}`);
// bench --decode's prompts.
const prompts = values.prompt ?? ['In the beginning God created', 'And Jesus answered and said unto them,', 'def main():\n    ', 'The LORD is my shepherd;'];

const dir = nodeModelDir(model);
const { tensors } = await openCheckpoint(dir);
const gpu = await openNodeGpu({ label: 'webmoe-offload-sweep' });
const rows: { slots: number | null; report: DecodeReport }[] = [];
try {
  let slotCounts: (number | null)[] = [null];
  for (let i = 0; i < slotCounts.length; i++) {
    const slots = slotCounts[i];
    const started = performance.now();
    const engine = await createLocalEngine({ gpu, dir, ownsGpu: false, ...(slots === null ? {} : { expertSlots: slots }) });
    try {
      const E = engine.info.config.n_routed_experts;
      if (i === 0) slotCounts = [null, ...new Set([Math.round(E / 2), Math.round(E / 4), 1].filter((s) => s >= 1 && s < E))];
      console.error(`[sweep] ${slots === null ? 'all resident' : `${slots} of ${E} expert slots`}: loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      const report = await runDecodeReport(engine, gpu, { prompts, maxTokens, runs, tensors: [...tensors.values()], quick: values.quick, peers: false, onProgress: (line) => console.error(`[sweep]   ${line}`) });
      if ((report.offload === null) !== (slots === null)) throw new Error(`expected ${slots === null ? 'no offload' : 'an offload'} at slots ${slots}, the report says ${JSON.stringify(report.offload)}`);
      rows.push({ slots, report });
    } finally {
      await engine.unload();
    }
  }
} finally {
  gpu.destroy();
}

const resident = rows[0].report;
const E = (rows.find((r) => r.report.offload)?.report.offload?.n_routed_experts) ?? NaN;
const table = rows.map(({ slots, report: r }) => {
  const o = r.offload;
  const uploadMs = o?.predicted_upload_ms_per_token ?? 0;
  return {
    slots: slots ?? E,
    resident: slots === null,
    share_resident: slots === null ? 1 : slots / E,
    plain_tokens_per_s: r.plain.tokensPerS,
    mtp_tokens_per_s: r.mtp?.tokensPerS ?? null,
    hit_rate: o ? o.hit_rate : null,
    uploaded_mib_per_token: o ? o.uploaded_bytes_per_token / 2 ** 20 : 0,
    route_wait_ms_per_token: o?.route_wait_ms_per_token ?? 0,
    predicted_ms_per_token: o?.predicted_ms_per_token ?? r.bytes_floor.floor_ms_per_token,
    resident_plus_upload_ms_per_token: resident.bytes_floor.measured_ms_per_token + uploadMs,
    measured_ms_per_token: r.bytes_floor.measured_ms_per_token,
    upload_gb_s: o?.upload_bandwidth_gb_s ?? null,
    identical: r.identical,
  };
});

if (values.json) console.log(JSON.stringify({ model, adapter: resident.adapter, prompts, max_tokens: maxTokens, runs, n_routed_experts: E, rows: table }, null, 2));
else {
  const f = (x: number | null, digits: number) => (x === null ? '–' : x.toFixed(digits));
  console.log(`${model} on ${resident.adapter}: ${prompts.length} prompts x ${runs} run(s), ${maxTokens} greedy tokens each; bytes floor ${resident.bytes_floor.floor_ms_per_token.toFixed(3)} ms per token at ${resident.bytes_floor.copy_gbps.toFixed(1)} GB/s copy`);
  console.log('');
  console.log('| expert slots | share resident | tok/s plain | tok/s MTP | hit rate | uploaded MiB/token | router wait ms/token | predicted ms/token (floor + upload) | resident measured + upload ms/token | measured ms/token | upload GB/s |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const t of table) {
    const hit = t.hit_rate === null ? '–' : `${(100 * t.hit_rate).toFixed(1)}%`;
    console.log(
      `| ${t.resident ? `${t.slots} (resident)` : t.slots} | ${(100 * t.share_resident).toFixed(0)}% | ${f(t.plain_tokens_per_s, 2)} | ${f(t.mtp_tokens_per_s, 2)} | ${t.resident ? '–' : hit} | ${f(t.uploaded_mib_per_token, 3)} | ${f(t.route_wait_ms_per_token, 1)} | ` +
        `${f(t.predicted_ms_per_token, 3)} | ${f(t.resident_plus_upload_ms_per_token, 1)} | ${f(t.measured_ms_per_token, 1)} | ${f(t.upload_gb_s, 2)} |`,
    );
  }
  if (table.some((t) => !t.identical)) console.log('\nWARNING: greedy outputs differ between plain and MTP decoding in some row');
}
