// Token sampling: logits [rows, vocab] f32 -> ids [rows] u32, one workgroup per row, no sort.
// Reference (the executable spec, by sorting): src/kernels/sample.ref.ts. Wrapper: src/kernels/sample.ts.
//
// Definition, per row (temperature == 0: argmax, ties -> lowest index, as torch.argmax):
//   order    tokens by (logit descending, index ascending); probabilities follow the logits.
//   top-k    keep the first top_k of the order (top_k == 0 or >= vocab: keep all).
//   top-p    of those, keep the shortest prefix of the order (at least 1 token) whose mass
//            reaches top_p times the mass of the top-k set (top_p >= 1: off), as HF/vLLM after top-k.
//   pick     u = uniform(seed, step + row) in [0, 1) from a PCG hash; walk the kept tokens in
//            INDEX order (not probability order, as FlashInfer's sorting-free samplers do: the
//            distribution is the same) and take the first whose running mass exceeds u * mass.
// Masses are exp((logit - max) / temperature). A row with a NaN or +inf logit, or only -inf ones,
// has no right token: it gets NON_FINITE_ID (>= any vocabulary) instead, so the host sees it in
// the ids it reads back anyway (src/model/deepseek_v3.ts) and stops with a typed error; -inf
// logits beside finite ones are fine (masked tokens).
//
// How, without a sort: a kept set is a prefix of the order, so it is fixed by a Cut (key, end):
// token j is in it when key_j > key or (key_j == key and j < end), with key_j the order-preserving
// u32 of the logit. The cut key is found digit by digit (passes of count/mass histograms over the
// row, RADIX_BITS bits per pass), ties at it by one chunked pass in index order (find_first).
//
// Variant mask == on (grammar-constrained decoding, src/runtime/grammar.ts): a token whose bit is 0
// in its row's token_mask is read as -inf, before everything above, so it is never picked; the
// unmasked variant reads the logits as they are (no cost for a request without a grammar).
//
// Variant probs == on (speculative decoding with sampled drafts, src/model/speculative_verify.ts):
// the row's kept distribution is written too, probs[j] = mass_j / (mass of the kept set) for the
// kept tokens and 0 elsewhere (temperature 0: 1 at the argmax; a row without a finite maximum:
// all 0), one more pass for the total and one to write. The id is picked as without it.
//
// Bindings:
//   0 params      uniform Params
//   1 logits      [rows, vocab] f32
//   2 ids         [rows] u32 out
//   3 token_mask  [rows, ceil(vocab / 32)] u32, bit j % 32 of word j / 32: token j allowed (mask == on)
//   4 probs       [rows, vocab] f32 out: the kept distribution (probs == on)
// Dispatch: workgroups = rows over (x, y), row = wid.y * nwg.x + wid.x; WG invocations each.
// Passes over a row, S = 32 / RADIX_BITS: 1 (max); top-k S + 3; top-p S + 3; 1 (pick). Unneeded
// ones are skipped (greedy: 1 pass). probs == on: 2 more (total, write).

struct Params {
  rows: u32,
  vocab: u32,
  temperature: f32, // <= 0: argmax
  top_k: u32, // 0: off
  top_p: f32, // >= 1: off
  seed: u32,
  step: u32,
  _pad: u32,
}

struct Cut {
  key: u32,
  end: u32,
}

struct Stats {
  count: u32,
  mass: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
#if mask == on
@group(0) @binding(3) var<storage, read> token_mask: array<u32>;
#endif
#if probs == on
@group(0) @binding(4) var<storage, read_write> probs: array<f32>;
#endif

override WG: u32 = 256; // a power of two (tree reductions halve it)
// CPU adapters (SwiftShader), where each workgroupBarrier is costly: invocation 0 sums the WG
// partials alone (1 barrier) instead of a tree (log2(WG) barriers).
override SERIAL_REDUCE: bool = false;
// Bits of the cut key found per pass (1, 2, 4 or 8): 32 / RADIX_BITS passes per search, each
// with a histogram of 2^RADIX_BITS bins per invocation in workgroup memory.
override RADIX_BITS: u32 = 2;
override DIGITS: u32 = 1u << RADIX_BITS;

const NONE: u32 = 0xffffffffu;
const NON_FINITE_ID: u32 = 0xfffffffeu; // src/kernels/sample.ts NON_FINITE_ID
const ALL: Cut = Cut(0u, NONE);

var<workgroup> wg_f: array<f32, WG>;
var<workgroup> wg_u: array<u32, WG>;
var<workgroup> hist_n: array<u32, WG * DIGITS>;
var<workgroup> hist_m: array<f32, WG * DIGITS>;
var<workgroup> wg_owner: u32;
var<workgroup> wg_start: f32;
var<workgroup> wg_target: f32;
var<workgroup> wg_result: u32;
var<workgroup> wg_bad: atomic<u32>; // a NaN or +inf logit in the row (zero at dispatch start)

var<private> row_base: u32;
var<private> row_index: u32;
var<private> row_max: f32;

const NEG_INF_BITS: u32 = 0xff800000u;
// A variable, not a constant: WGSL refuses -inf as a constant expression.
var<private> neg_inf_bits: u32 = NEG_INF_BITS;

// Logit j of the row, -inf where the row's token mask refuses it.
fn logit(j: u32) -> f32 {
  let l = logits[row_base + j];
#if mask == on
  let words = (params.vocab + 31u) / 32u;
  if (((token_mask[row_index * words + j / 32u] >> (j % 32u)) & 1u) == 0u) {
    return bitcast<f32>(neg_inf_bits);
  }
#endif
  return l;
}

// NaN or +inf, from the bits (a compiler may assume x == x for floats).
fn nan_or_pos_inf(x: f32) -> bool {
  let b = bitcast<u32>(x);
  return (b & 0x7fffffffu) > 0x7f800000u || b == 0x7f800000u;
}

// Float order as unsigned order: negative floats reversed below the positive ones.
fn order_key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn in_cut(key: u32, j: u32, c: Cut) -> bool {
  return key > c.key || (key == c.key && j < c.end);
}

fn mass_of(l: f32) -> f32 {
  return exp((l - row_max) / params.temperature);
}

// PCG hash (O'Neill's pcg32 output on one LCG step); sample.ref.ts pcgHash is the same in u32.
fn pcg_hash(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// 24 random bits / 2^24: exact in f32 and in the f64 reference. Keyed by step + row, the index
// of the token the row samples: row r of a speculative verify step draws the uniform a plain
// step r later would, so that speculation (which outputs a row's sample only where every row
// before it was accepted) outputs what plain decoding would, token for token, for a seed.
fn uniform01(row: u32) -> f32 {
  let h = pcg_hash(pcg_hash(pcg_hash(params.seed) + params.step + row));
  return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Count and mass of the tokens in both cuts, summed in one fixed order so that every call on the
// same set gives the same bits. Every invocation gets the totals.
fn stats(lid: u32, a: Cut, b: Cut, with_mass: bool) -> Stats {
  var n = 0u;
  var m = 0.0;
  for (var j = lid; j < params.vocab; j += WG) {
    let l = logit(j);
    let key = order_key(l);
    if (in_cut(key, j, a) && in_cut(key, j, b)) {
      n += 1u;
      if (with_mass) {
        m += mass_of(l);
      }
    }
  }
  wg_u[lid] = n;
  wg_f[lid] = m;
  workgroupBarrier();
  if (SERIAL_REDUCE) {
    if (lid == 0u) {
      for (var t = 1u; t < WG; t++) {
        n += wg_u[t];
        m += wg_f[t];
      }
      wg_u[0] = n;
      wg_f[0] = m;
    }
  } else {
    for (var half = WG / 2u; half > 0u; half /= 2u) {
      if (lid < half) {
        wg_u[lid] += wg_u[lid + half];
        wg_f[lid] += wg_f[lid + half];
      }
      workgroupBarrier();
    }
  }
  let s = Stats(workgroupUniformLoad(&wg_u[0]), workgroupUniformLoad(&wg_f[0]));
  workgroupBarrier(); // wg_u, wg_f are reused by the next call
  return s;
}

// The key of the shortest prefix of set `a` holding at least min_count tokens and min_mass mass:
// the largest key K whose cut (K, NONE) passes (it is the key of a member of `a`). Found one
// RADIX_BITS digit per pass, high digits first: each invocation histograms its tokens above the
// key so far by their next digit (bin d - 1 for digit d >= 1, the last bin for tokens above
// every candidate), the bins are summed over the workgroup, and invocation 0 keeps the largest
// digit whose suffix of bins passes.
fn search_cut_key(lid: u32, a: Cut, min_count: u32, min_mass: f32, with_mass: bool) -> u32 {
  let slots = lid * DIGITS;
  var key = 0u;
  for (var shift = 32i - i32(RADIX_BITS); shift >= 0i; shift -= i32(RADIX_BITS)) {
    let sh = u32(shift);
    let prefix = key >> sh; // its low RADIX_BITS are 0
    for (var b = 0u; b < DIGITS; b++) {
      hist_n[slots + b] = 0u;
      hist_m[slots + b] = 0.0;
    }
    for (var j = lid; j < params.vocab; j += WG) {
      let l = logit(j);
      let kj = order_key(l);
      if (kj >= key && in_cut(kj, j, a)) {
        let digit = (kj >> sh) - prefix;
        if (digit >= 1u) {
          let b = slots + min(digit, DIGITS) - 1u;
          hist_n[b] += 1u;
          if (with_mass) {
            hist_m[b] += mass_of(l);
          }
        }
      }
    }
    workgroupBarrier();
    if (SERIAL_REDUCE) {
      if (lid < DIGITS) {
        for (var t = 1u; t < WG; t++) {
          hist_n[lid] += hist_n[t * DIGITS + lid];
          hist_m[lid] += hist_m[t * DIGITS + lid];
        }
      }
      workgroupBarrier();
    } else {
      for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
          for (var b = 0u; b < DIGITS; b++) {
            hist_n[slots + b] += hist_n[slots + half * DIGITS + b];
            hist_m[slots + b] += hist_m[slots + half * DIGITS + b];
          }
        }
        workgroupBarrier();
      }
    }
    if (lid == 0u) {
      var n = hist_n[DIGITS - 1u]; // the tokens above every candidate
      var m = hist_m[DIGITS - 1u];
      var chosen = 0u;
      for (var d = DIGITS - 1u; d >= 1u; d--) {
        n += hist_n[d - 1u];
        m += hist_m[d - 1u];
        if (n >= min_count && m >= min_mass) {
          chosen = d;
          break;
        }
      }
      wg_result = chosen;
    }
    key |= workgroupUniformLoad(&wg_result) << sh;
    workgroupBarrier(); // the histogram and wg_result are reused
  }
  return key;
}

// Walks the members of `a` and `b` (only those with key == tie_key unless tie_key is NONE) in index
// order with a running total (base + each member's weight: 1 if count_mode, else its mass) and
// returns the first index whose total reaches the target (> if strict, else >=), where
// target = target_abs + fraction * (sum of the weights). None reaching it: the last member.
// Each invocation owns a contiguous chunk; invocation 0 scans the chunk sums to find the owner.
fn find_first(lid: u32, a: Cut, b: Cut, tie_key: u32, count_mode: bool, base: f32,
              target_abs: f32, fraction: f32, strict: bool) -> u32 {
  let chunk = (params.vocab + WG - 1u) / WG;
  let lo = min(lid * chunk, params.vocab);
  let hi = min(lo + chunk, params.vocab);
  var sum = 0.0;
  var last = NONE;
  for (var j = lo; j < hi; j++) {
    let l = logit(j);
    let key = order_key(l);
    if (in_cut(key, j, a) && in_cut(key, j, b) && (tie_key == NONE || key == tie_key)) {
      sum += select(mass_of(l), 1.0, count_mode);
      last = j;
    }
  }
  wg_f[lid] = sum;
  wg_u[lid] = last;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var t = 0u; t < WG; t++) {
      total += wg_f[t];
    }
    let goal = target_abs + fraction * total;
    var run = base;
    var owner = NONE;
    var last_any = NONE;
    for (var t = 0u; t < WG; t++) {
      if (wg_u[t] == NONE) {
        continue;
      }
      last_any = wg_u[t];
      let next = run + wg_f[t];
      if (owner == NONE && select(next >= goal, next > goal, strict)) {
        owner = t;
        wg_start = run;
      }
      run = next;
    }
    wg_owner = owner;
    wg_target = goal;
    wg_result = last_any;
  }
  workgroupBarrier();
  if (lid == wg_owner) {
    // Rounding may keep the walk below the target: then the chunk's last member.
    var run = wg_start;
    var found = last;
    for (var j = lo; j < hi; j++) {
      let l = logit(j);
      let key = order_key(l);
      if (in_cut(key, j, a) && in_cut(key, j, b) && (tie_key == NONE || key == tie_key)) {
        run += select(mass_of(l), 1.0, count_mode);
        if (select(run >= wg_target, run > wg_target, strict)) {
          found = j;
          break;
        }
      }
    }
    wg_result = found;
  }
  let result = workgroupUniformLoad(&wg_result);
  workgroupBarrier();
  return result;
}

#if probs == on
// probs of the row: mass / total for the members of both cuts, 0 elsewhere (total 0: all 0).
fn write_probs(lid: u32, a: Cut, b: Cut, total: f32) {
  for (var j = lid; j < params.vocab; j += WG) {
    let l = logit(j);
    var p = 0.0;
    if (total > 0.0 && in_cut(order_key(l), j, a) && in_cut(order_key(l), j, b)) {
      p = mass_of(l) / total;
    }
    probs[row_base + j] = p;
  }
}

// probs of a point mass at `at` (greedy), or all 0 (at == NONE: no finite maximum).
fn write_point_probs(lid: u32, at: u32) {
  for (var j = lid; j < params.vocab; j += WG) {
    probs[row_base + j] = select(0.0, 1.0, j == at);
  }
}
#endif

// Slot `into` takes slot `other_slot`'s (max, index) if it is larger, or equal at a lower index.
fn merge_argmax(into: u32, other_slot: u32) {
  let other = wg_f[other_slot];
  let other_j = wg_u[other_slot];
  let mine_j = wg_u[into];
  if (other_j != NONE && (mine_j == NONE || other > wg_f[into] || (other == wg_f[into] && other_j < mine_j))) {
    wg_f[into] = other;
    wg_u[into] = other_j;
  }
}

@compute @workgroup_size(WG)
fn sample(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.rows) {
    return;
  }
  row_base = row * params.vocab;
  row_index = row;

  // Max and argmax (ties -> lowest index; an all -inf row gives its first token).
  var best = 0.0;
  var best_j = NONE;
  var bad = false;
  for (var j = lid; j < params.vocab; j += WG) {
    let l = logit(j);
    bad = bad || nan_or_pos_inf(l);
    if (best_j == NONE || l > best) {
      best = l;
      best_j = j;
    }
  }
  if (bad) {
    atomicOr(&wg_bad, 1u);
  }
  wg_f[lid] = best;
  wg_u[lid] = best_j;
  workgroupBarrier();
  if (SERIAL_REDUCE) {
    if (lid == 0u) {
      for (var t = 1u; t < WG; t++) {
        merge_argmax(0u, t);
      }
    }
  } else {
    for (var half = WG / 2u; half > 0u; half /= 2u) {
      if (lid < half) {
        merge_argmax(lid, lid + half);
      }
      workgroupBarrier();
    }
  }
  if (lid == 0u) {
    // Bad as well: every logit -inf (softmax of nothing).
    wg_result = select(0u, 1u, atomicLoad(&wg_bad) != 0u || bitcast<u32>(wg_f[0]) == NEG_INF_BITS);
  }
  let non_finite = workgroupUniformLoad(&wg_result) != 0u;
  let top = workgroupUniformLoad(&wg_u[0]);
  row_max = workgroupUniformLoad(&wg_f[0]);
  workgroupBarrier();
  if (non_finite) {
#if probs == on
    write_point_probs(lid, NONE);
#endif
    if (lid == 0u) {
      ids[row] = NON_FINITE_ID;
    }
    return;
  }
  if (params.temperature <= 0.0) {
#if probs == on
    write_point_probs(lid, top);
#endif
    if (lid == 0u) {
      ids[row] = top;
    }
    return;
  }

  // Top-k: the cut holding the first top_k of the order.
  var kept = ALL;
  if (params.top_k > 0u && params.top_k < params.vocab) {
    let key = search_cut_key(lid, ALL, params.top_k, 0.0, false);
    let above = stats(lid, ALL, Cut(key, 0u), false);
    let with_ties = stats(lid, ALL, Cut(key, NONE), false);
    var end = NONE;
    if (with_ties.count > params.top_k) {
      // The (top_k - above.count)-th token tied at the cut key, in index order, is the last kept.
      end = find_first(lid, ALL, ALL, key, true, 0.0, f32(params.top_k - above.count), 0.0, false) + 1u;
    }
    kept = Cut(key, end);
  }

  // Top-p within the top-k set: a second cut, intersected with the first.
  var kept_p = ALL;
  if (params.top_p < 1.0) {
    let goal = params.top_p * stats(lid, kept, ALL, true).mass;
    let key = search_cut_key(lid, kept, 1u, goal, true);
    let above = stats(lid, kept, Cut(key, 0u), true);
    let last = find_first(lid, kept, ALL, key, false, above.mass, goal, 0.0, false);
    kept_p = Cut(key, last + 1u);
  }

#if probs == on
  write_probs(lid, kept, kept_p, stats(lid, kept, kept_p, true).mass);
#endif
  let u = uniform01(row);
  let picked = find_first(lid, kept, kept_p, NONE, false, 0.0, 0.0, u, true);
  if (lid == 0u) {
    ids[row] = picked;
  }
}
