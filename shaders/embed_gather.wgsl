// Embedding lookup (src/model/MATH.md 4.1): h[t, j] = embed_tokens[ids[t], j] as f32, for the
// table `model.embed_tokens.weight` [vocab, d] as stored in the checkpoint. An id >= vocab reads
// nothing and gives a row of zeros. Reference: src/kernels/embed_gather.ref.ts.
//
// A table larger than one binding is split by rows (src/model/placement.ts): one dispatch per
// piece, holding rows first_row .. first_row + rows - 1, writes the h rows of the ids it holds
// and leaves the others alone; the piece with first_row 0 also writes the zeros of ids >= vocab.
// The pieces together write every row of h once, in any order.
// Wrapper: src/kernels/embed_gather.ts. Needs half_float.wgsl (f16_to_f32_bits).
//
// Variant axis (src/kernels/shader_compose.ts):
//   dtype  bf16  table [vocab, d] bf16 (the top half of an f32), 2 per u32, little-endian:
//                element i in the low half of word i/2 when i is even, the high half when odd
//                (a row starts inside a word when d is odd)
//          f16   table [vocab, d] IEEE half, packed the same way
//          f32   table [vocab, d] f32 (kept as u32 bits)
// Only integer operations move the bits, so the gather is exact: -0, subnormals and infinities
// come through unchanged, with no float rounding or flushing in between.
//
// Bindings:
//   0 params  uniform Params
//   1 ids     [T] u32 token ids (on the GPU: the previous step's sampled id never visits the CPU)
//   2 table   u32 words holding the table (or a piece: its rows, from word 0) as above
//   3 h       [T, d] f32, written (as u32 bits)
//
// Dispatch: one invocation per element of h; workgroups = ceil(T * d / WORKGROUP_SIZE), laid out
// over (x, y) as group = wid.y * nwg.x + wid.x.

struct Params {
  T: u32,
  d: u32,
  rows: u32, // rows of the table in this binding (vocab for a whole table)
  first_row: u32, // the token id of its row 0 (0 for a whole table)
  vocab: u32, // rows of the whole table
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> h: array<u32>;

override WORKGROUP_SIZE: u32 = 64;

// The f32 bits of table element `i` (= (id - first_row) * d + j).
fn element_bits(i: u32) -> u32 {
#if dtype == f32
  return table[i];
#elif dtype == bf16
  return (table[i / 2u] >> ((i & 1u) * 16u)) << 16u;
#else
  return f16_to_f32_bits((table[i / 2u] >> ((i & 1u) * 16u)) & 0xFFFFu);
#endif
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  if (index >= params.T * params.d) {
    return;
  }
  let t = index / params.d;
  let j = index - t * params.d;
  let id = ids[t];
  // An id past the table (a corrupt or foreign token) must not read out of bounds: zeros instead.
  // (id - first_row wraps for ids below first_row, so one comparison tests both ends.)
  let row = id - params.first_row;
  if (row < params.rows) {
    h[index] = element_bits(row * params.d + j);
  } else if (params.first_row == 0u && id >= params.vocab) {
    h[index] = 0u;
  }
}
