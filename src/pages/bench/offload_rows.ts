// The decode benchmark's expert offload on the page: the "Expert slots per layer" field read into
// the engine's expertSlots, and the report's offload figures (offload_report.ts) as the rows of a
// table, one column per decoding mode, with the unit in every cell. Pure, so that vitest checks it.

import type { DecodeReport } from '../../bench/decode_report.ts';
import type { OffloadRates } from '../../bench/offload_report.ts';
import { ArgumentError } from '../../errors.ts';
import { bytes, gbps, ms, percent, sig3, times } from './format.ts';
import type { Cell, Column } from './tables.ts';

/**
 * The field's text as expertSlots: empty is every expert resident (the engine's default without a
 * GPU budget). The engine checks the upper bound, the model's n_routed_experts.
 */
export function parseExpertSlots(text: string): number | undefined {
  if (text.trim() === '') return undefined;
  const slots = Number(text);
  if (!(Number.isInteger(slots) && slots >= 1)) throw new ArgumentError(`Expert slots per layer must be a whole number of 1 or more (empty: every expert resident), got ${text}`);
  return slots;
}

/** The offload table's columns and rows; null when every expert was resident (no offload in the report). */
export function offloadRows(r: Pick<DecodeReport, 'offload' | 'bytes_floor' | 'mtp'>): { columns: Column[]; rows: Cell[][] } | null {
  const o = r.offload;
  if (!o) return null;
  const mtp = o.mtp && r.mtp ? { rates: o.mtp, msPerToken: 1000 / r.mtp.tokensPerS } : undefined;
  const columns: Column[] = [{ label: 'figure' }, { label: 'plain decoding', figure: true }, ...(mtp ? [{ label: 'MTP speculative', figure: true }] : [])];
  // Figures of the cache and the device are the same in both modes; the rates are each mode's own.
  const same = (cell: Cell): Cell[] => (mtp ? [cell, cell] : [cell]);
  const each = (f: (x: OffloadRates) => Cell): Cell[] => [f(o), ...(mtp ? [f(mtp.rates)] : [])];
  const floor = r.bytes_floor.floor_ms_per_token;
  return {
    columns,
    rows: [
      [{ text: 'Routed experts on the GPU', note: 'the others in CPU memory, uploaded on a miss' }, ...same(`${o.expert_slots} of ${o.n_routed_experts} per layer`)],
      // null: no decode step ran, so the cache was never asked.
      ['Cache hit rate', ...each((x) => (x.hit_rate === null ? 'no decode step' : percent(x.hit_rate)))],
      ['Misses', ...each((x) => `${sig3(x.misses_per_token)} per token`)],
      ['Uploaded', ...each((x) => `${bytes(x.uploaded_bytes_per_token)} per token`)],
      [{ text: 'Waiting for the router', note: 'each offloaded layer reads its expert ids back before it uploads' }, ...each((x) => `${ms(x.route_wait_ms_per_token)} per token`)],
      ['Upload bandwidth', ...same({ text: gbps(o.upload_bandwidth_gb_s), note: `writeBuffer in chunks of one expert (${bytes(o.expert_bytes)})` })],
      // The report predicts plain decoding only: the floor it adds the uploads to is plain decoding's.
      [
        { text: 'Bytes model', note: 'the bytes floor plus the uploads at the upload bandwidth' },
        { text: `${ms(o.predicted_ms_per_token)} per token`, note: `floor ${ms(floor)} + uploads ${ms(o.predicted_upload_ms_per_token)}` },
        ...(mtp ? ['–'] : []),
      ],
      [
        'Measured',
        { text: `${ms(o.measured_ms_per_token)} per token`, note: `${times(o.measured_ms_per_token / o.predicted_ms_per_token)} the prediction` },
        ...(mtp ? [`${ms(mtp.msPerToken)} per token`] : []),
      ],
    ],
  };
}
