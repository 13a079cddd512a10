// The expert offload's part of the decode report: the cache's counters over plain decoding's
// timed decode steps (decode.ts), per token, beside the upload bandwidth measured in the same run
// (upload_bandwidth.ts), and what the bytes model predicts from them:
//
//   predicted_upload_ms_per_token = uploaded_bytes_per_token / upload bandwidth
//   predicted_ms_per_token        = bytes floor + predicted_upload_ms_per_token
//
// The model: a decode step still reads every weight a token uses from GPU memory once (the bytes
// floor, bytes_floor.ts: a cached expert is read from its slot as a resident one is), and on top of
// that the misses' bytes cross to the GPU, not overlapped with the reads (a layer's uploads wait
// for its router's ids, and its experts wait for the uploads). Left out: the readback round trip
// of each offloaded layer (route_wait_ms_per_token, reported beside it) and extra passes.

import type { OffloadTally } from './decode.ts';

/** The counters as figures per decoded token. */
export interface OffloadRates {
  /** hits / (hits + misses); null when no decode step ran. */
  hit_rate: number | null;
  misses_per_token: number;
  uploaded_bytes_per_token: number;
  route_wait_ms_per_token: number;
}

export interface OffloadReport extends OffloadRates {
  expert_slots: number;
  n_routed_experts: number;
  /** Bytes one miss uploads (every projection and scale of one expert): the chunk of the bandwidth measurement. */
  expert_bytes: number;
  upload_bandwidth_gb_s: number;
  predicted_upload_ms_per_token: number;
  /** The bytes floor of the step (the resident model's) plus the predicted uploads. */
  predicted_ms_per_token: number;
  /** Plain decoding's ms per token, measured. */
  measured_ms_per_token: number;
  /** The same rates for MTP speculative decoding, per token it emitted (no prediction: the floor is plain decoding's). */
  mtp?: OffloadRates;
}

export function offloadRates(tally: OffloadTally, tokens: number): OffloadRates {
  const accesses = tally.hits + tally.misses;
  // No decode step (one-token replies): nothing was uploaded per token.
  const per = (n: number) => (tokens > 0 ? n / tokens : 0);
  return {
    hit_rate: accesses > 0 ? tally.hits / accesses : null,
    misses_per_token: per(tally.misses),
    uploaded_bytes_per_token: per(tally.uploadedBytes),
    route_wait_ms_per_token: per(tally.routeWaitMs),
  };
}

export interface OffloadReportInput {
  expertSlots: number;
  nRoutedExperts: number;
  expertBytes: number;
  plain: { tally: OffloadTally; tokens: number; msPerToken: number };
  mtp?: { tally: OffloadTally; tokens: number };
  uploadGbps: number;
  floorMsPerToken: number;
}

export function offloadReport(input: OffloadReportInput): OffloadReport {
  const rates = offloadRates(input.plain.tally, input.plain.tokens);
  const uploadMs = rates.uploaded_bytes_per_token / (input.uploadGbps * 1e6);
  return {
    expert_slots: input.expertSlots,
    n_routed_experts: input.nRoutedExperts,
    expert_bytes: input.expertBytes,
    ...rates,
    upload_bandwidth_gb_s: input.uploadGbps,
    predicted_upload_ms_per_token: uploadMs,
    predicted_ms_per_token: input.floorMsPerToken + uploadMs,
    measured_ms_per_token: input.plain.msPerToken,
    ...(input.mtp ? { mtp: offloadRates(input.mtp.tally, input.mtp.tokens) } : {}),
  };
}
