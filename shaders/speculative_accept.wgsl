// Speculative sampling's acceptance of one draft: ids[0] (the sampler's sample y0 of p) becomes the
// first token the verify step outputs: the draft d with probability min(1, p(d) / q(d)), else a
// sample of norm(max(0, p - q)). One workgroup, two passes over the vocabulary at most.
// Reference (the executable spec): src/kernels/speculative_accept.ref.ts. Wrapper: src/kernels/speculative_accept.ts.
//
//   p  the main model's row-0 kept distribution [vocab] (the sampler's probs, grammar mask included)
//   q  row q_row of the MTP module's kept distributions [rows, draft_vocab] (0 beyond draft_vocab)
//   accept   u_a * q(d) < p(d)   (q(d) = 0 < p(d): accept, the ratio's limit; p(d) = 0: never)
//   reject   inverse CDF of max(0, p_j - q_j) in index order with u_r; no residual mass (p <= q
//            by rounding): y0 stays, a sample of p
// ids[0] == NON_FINITE_ID (row 0 had no finite maximum) stays, for the host to stop on.
// The uniforms: 24 bits of pcg_hash(pcg_hash(pcg_hash(seed ^ salt) + step)) / 2^24, as
// shaders/sample.wgsl's with the salts of the reference (ACCEPT_SALT, RESIDUAL_SALT).
//
// Bindings:
//   0 params   uniform Params
//   1 p        [vocab] f32 (row 0 of the verify step's probs)
//   2 q        [q_row + 1, draft_vocab] f32
//   3 ids      [>= 1] u32 read_write: ids[0] in (y0) and out (the first output token)
// Dispatch: 1 workgroup of WG invocations.

struct Params {
  vocab: u32,
  draft_vocab: u32,
  q_row: u32,
  draft: u32,
  seed: u32,
  step: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;

override WG: u32 = 256;

const NONE: u32 = 0xffffffffu;
const NON_FINITE_ID: u32 = 0xfffffffeu; // src/kernels/sample.ts NON_FINITE_ID
const ACCEPT_SALT: u32 = 0x61636370u; // speculative_accept.ref.ts
const RESIDUAL_SALT: u32 = 0x72657364u;

var<workgroup> wg_sum: array<f32, WG>;
var<workgroup> wg_last: array<u32, WG>;
var<workgroup> wg_done: u32;
var<workgroup> wg_owner: u32;
var<workgroup> wg_start: f32;
var<workgroup> wg_goal: f32;

// shaders/sample.wgsl pcg_hash.
fn pcg_hash(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn uniform01(salt: u32) -> f32 {
  let h = pcg_hash(pcg_hash(pcg_hash(params.seed ^ salt) + params.step));
  return f32(h >> 8u) * (1.0 / 16777216.0);
}

fn q_of(j: u32) -> f32 {
  if (j >= params.draft_vocab) {
    return 0.0;
  }
  return q[params.q_row * params.draft_vocab + j];
}

fn residual(j: u32) -> f32 {
  return max(0.0, p[j] - q_of(j));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) {
    var done = 1u;
    let d = params.draft;
    if (ids[0] != NON_FINITE_ID) {
      let pd = select(0.0, p[min(d, params.vocab - 1u)], d < params.vocab);
      if (uniform01(ACCEPT_SALT) * q_of(d) < pd) {
        ids[0] = d;
      } else {
        done = 0u;
      }
    }
    wg_done = done;
  }
  if (workgroupUniformLoad(&wg_done) != 0u) {
    return;
  }

  // Rejected: each invocation sums the residual of its contiguous chunk.
  let chunk = (params.vocab + WG - 1u) / WG;
  let lo = min(lid * chunk, params.vocab);
  let hi = min(lo + chunk, params.vocab);
  var sum = 0.0;
  var last = NONE;
  for (var j = lo; j < hi; j++) {
    let r = residual(j);
    if (r > 0.0) {
      sum += r;
      last = j;
    }
  }
  wg_sum[lid] = sum;
  wg_last[lid] = last;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var t = 0u; t < WG; t++) {
      total += wg_sum[t];
    }
    let goal = uniform01(RESIDUAL_SALT) * total;
    var run = 0.0;
    var owner = NONE;
    var last_owner = NONE;
    var last_start = 0.0;
    for (var t = 0u; t < WG; t++) {
      if (wg_last[t] == NONE) {
        continue;
      }
      if (owner == NONE && run + wg_sum[t] > goal) {
        owner = t;
        wg_start = run;
      }
      last_owner = t;
      last_start = run;
      run += wg_sum[t];
    }
    if (owner == NONE) {
      // Rounding kept the walk below the goal: the last chunk's last member.
      owner = last_owner;
      wg_start = last_start;
    }
    // No residual mass at all: y0 (a sample of p) stays.
    wg_owner = select(owner, NONE, !(total > 0.0));
    wg_goal = goal;
  }
  workgroupBarrier();
  if (lid == wg_owner) {
    var run = wg_start;
    var found = last;
    for (var j = lo; j < hi; j++) {
      let r = residual(j);
      if (r > 0.0) {
        run += r;
        if (run > wg_goal) {
          found = j;
          break;
        }
      }
    }
    ids[0] = found;
  }
}
