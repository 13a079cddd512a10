// The decode benchmark on the page: the shipped checkpoint (or ?model=) loaded on this page's own
// device, in this thread (the step probe must see its steps), then the same report as
// `webmoe bench --decode --json`: tok/s with and without MTP, dispatches per token, the CPU and
// GPU time of a step, the bytes floor, and the model-level peer beside our whole step; with
// expertSlots, the routed experts in CPU memory and the offload's rows (offload_rows.ts).

import { createEngine, openCheckpoint, urlDir, type Gpu } from '../../index.ts';
import { runDecodeReport, type DecodeReport } from '../../bench/decode_report.ts';
import type { StepCost } from '../../bench/step_cost.ts';
import { $, el } from '../demo/dom.ts';
import { bytes, gbps, ms, percent, sig3, times, tokPerS } from './format.ts';
import { offloadRows } from './offload_rows.ts';
import { fillTable } from './tables.ts';

const PROMPTS = ['In the beginning God created', 'And Jesus answered and said unto them,', 'def main():\n    ', 'The LORD is my shepherd;'];

export async function runDecode(gpu: Gpu, model: string, options: { quick: boolean; peers: boolean; expertSlots?: number; onProgress: (line: string) => void }): Promise<DecodeReport> {
  options.onProgress(`loading ${model}${options.expertSlots === undefined ? '' : ` with ${options.expertSlots} expert slots per layer`}`);
  const [engine, checkpoint] = await Promise.all([createEngine({ model, gpu, worker: false, cacheShards: false, expertSlots: options.expertSlots }), openCheckpoint(urlDir(model))]);
  try {
    return await runDecodeReport(engine, gpu, {
      prompts: options.quick ? PROMPTS.slice(0, 1) : PROMPTS,
      maxTokens: options.quick ? 8 : 32,
      tensors: [...checkpoint.tensors.values()],
      quick: options.quick,
      peers: options.peers,
      onProgress: options.onProgress,
    });
  } finally {
    await engine.unload();
  }
}

export function showDecode(r: DecodeReport): void {
  const both = (plain: string, mtp: string | undefined) => (mtp === undefined ? plain : `${plain} plain · ${mtp} with MTP`);
  const step = (f: (s: StepCost) => string) => both(f(r.plain.step), r.mtp && f(r.mtp.step));
  const floor = r.bytes_floor;
  const figures: [id: string, label: string, value: string, note?: string][] = [
    ['plain', 'Plain decoding', tokPerS(r.plain.tokensPerS), `${ms(1000 / r.plain.tokensPerS)} per token`],
    ['mtp', 'MTP speculative decoding', r.mtp ? tokPerS(r.mtp.tokensPerS) : 'no MTP module', r.mtp ? `${percent(r.mtp.acceptance)} of drafts accepted, ${sig3(r.mtp.tokensPerStep)} tokens per step; greedy output ${r.identical ? 'identical' : 'DIFFERENT'}` : undefined],
    ['dispatches', 'Dispatches per token', step((s) => sig3(s.dispatches_per_token)), r.mtp ? `${r.plain.step.dispatches_per_step} per step, ${r.mtp.step.dispatches_per_step} per verify step` : `${r.plain.step.dispatches_per_step} per step`],
    ['cpu', 'CPU to record and submit a step', step((s) => ms(s.cpu_record_submit_ms))],
    ['gpu', 'GPU time per step', r.gpu_ms_per_step === null ? 'no timestamp queries here' : step((s) => (s.gpu_ms_per_step === null ? '–' : ms(s.gpu_ms_per_step)))],
    ['floor', 'Bytes floor', `${ms(floor.floor_ms_per_token)} per token`, `${bytes(floor.bytes_per_token)} of weights per token at ${gbps(floor.copy_gbps)} copy: at most ${tokPerS(floor.floor_tokens_per_s)}; plain decoding takes ${times(floor.measured_over_floor)} the floor`],
  ];
  $('decode-figures').replaceChildren(
    ...figures.map(([id, label, value, note]) => {
      const box = el('div', '', { 'data-figure': id });
      box.append(el('dt', label), el('dd', value));
      if (note) box.append(el('dd', note, { class: 'note' }));
      return box;
    }),
  );
  $('decode-about').textContent = `${r.checkpoint} (weights ${r.weights}) on ${r.adapter}: ${r.prompts.length} prompt${r.prompts.length === 1 ? '' : 's'} of ${r.max_tokens} greedy tokens per mode.`;
  showModelPeer(r);
  showOffload(r);
  $('decode-box').hidden = false;
}

/** The offload's rows; hidden again when the next run keeps every expert resident. */
function showOffload(r: DecodeReport): void {
  const table = offloadRows(r);
  $('decode-offload-box').hidden = table === null;
  if (table) fillTable($<HTMLTableElement>('decode-offload'), table.columns, table.rows);
  else $('decode-offload').replaceChildren();
}

function showModelPeer(r: DecodeReport): void {
  const peer = r.model_peer;
  const table = $<HTMLTableElement>('model-peer');
  const note = $('model-peer-note');
  if (!peer || 'skipped' in peer) {
    table.hidden = true;
    note.textContent = peer ? `Not run: ${peer.skipped}.` : 'Not run (switched off).';
    return;
  }
  const ours = 1000 / r.plain.tokensPerS;
  fillTable(
    table,
    [{ label: 'engine' }, { label: 'what one token runs' }, { label: 'per token', figure: true }, { label: 'rate', figure: true }, { label: 'ours, faster by', figure: true }],
    [
      ['webmoe', 'the whole decode step (FP8 weights)', ms(ours), tokPerS(r.plain.tokensPerS), '–'],
      [peer.name.split(',')[0], `its ${peer.matmuls_per_token} matrix products only (f32 weights, ${bytes(peer.weight_bytes_per_token)})`, { text: ms(peer.ms_per_token), note: `wall clock, ${peer.runs} runs` }, tokPerS(peer.tokens_per_s), times(peer.ms_per_token / ours)],
    ],
  );
  table.hidden = false;
  note.textContent = 'TF.js has no DeepSeek-V3: the peer runs only the matrix products of our decode step, recorded together and submitted once, on this page’s device.';
}
