// Repetition penalty on logits before sampling, in place, as Hugging Face's
// RepetitionPenaltyLogitsProcessor: for every token id j already seen (prompt and generated),
//   logits[r, j] = logits[r, j] > 0 ? logits[r, j] / penalty : logits[r, j] * penalty
// once per distinct id, the same ids for every row. Reference: src/kernels/repetition_penalty.ref.ts.
// Wrapper: src/kernels/repetition_penalty.ts.
//
// The seen ids arrive as a presence mask (bit j of word j / 32), kept by the caller, so the kernel
// needs no list of ids, no sort and no deduplication: a set bit is penalised exactly once.
//
// Bindings:
//   0 params  uniform Params
//   1 logits  [rows, vocab] f32, read and written only where the mask bit is set
//   2 mask    [ceil(vocab / 32)] u32
//
// Dispatch: one invocation per (row, mask word), visiting the word's set bits: 32 times fewer
// invocations than one per logit, and the logits of unseen ids are never touched.
// workgroups = ceil(rows * words / WORKGROUP_SIZE), laid out over (x, y) as
// group = wid.y * nwg.x + wid.x.

struct Params {
  rows: u32,
  vocab: u32,
  // ceil(vocab / 32)
  words: u32,
  penalty: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;

override WORKGROUP_SIZE: u32 = 64;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  // penalty 1 is "off": return before any write, so the logits keep their exact bits (a division
  // by 1 need not be exact on every GPU, WGSL allows 2.5 ULP).
  if (index >= params.rows * params.words || params.penalty == 1.0) {
    return;
  }
  let row = index / params.words;
  let word = index - row * params.words;
  let p = params.penalty;
  var bits = mask[word];
  while (bits != 0u) {
    let j = word * 32u + firstTrailingBit(bits);
    bits = bits & (bits - 1u); // clear the lowest set bit
    // Bits past vocab (garbage in the last word of a caller's mask) must not write out of the row.
    if (j < params.vocab) {
      let i = row * params.vocab + j;
      let x = logits[i];
      logits[i] = select(x * p, x / p, x > 0.0);
    }
  }
}
