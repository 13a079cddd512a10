// Block-scaled FP8 quantisation of a Linear weight W [rows, cols] at load time, for releases that
// store their Linears in BF16 / F16 / F32 (src/model/MATH.md 3): per 128x128 block (edge blocks
// partial)
//   amax = max |W| over the block,  S = amax / 448,  Q = e4m3_rne(W / S)   (saturating at 448)
// which is what a released FP8 checkpoint holds: the FP8 kernels then read Q and S unchanged.
// A block with amax below the smallest normal f32 (all zeros in practice) gets S = 1, Q = 0.
// Needs fp8_e4m3.wgsl (f32_to_e4m3) and half_float.wgsl. Reference: src/kernels/quantize_fp8.ref.ts.
// Wrapper: src/kernels/quantize_fp8.ts.
//
// One call quantises a band of whole 128-row blocks of W held in `source` (the loader streams the
// tensor through a staging buffer a band at a time): source row 0 is W's row params.first_row.
//
// Variant axis `dtype` (the source's storage, packed in u32 words, little-endian):
//   bf16  2 per word, element i in the low half of word i/2 when i is even
//   f16   IEEE half, packed the same way
//   f32   one per word
//
// Bindings:
//   0 params  uniform Params
//   1 source  the band [band_rows, cols] in `dtype`
//   2 codes   W's e4m3 codes, row-major [rows, cols] bytes, 4 per u32, from word params.code_word
//             (rows are not padded: a word may hold the end of one row and the start of the next,
//             so bytes are merged with atomicOr into the zeroed buffer)
//   3 scales  W's S [ceil(rows/128), ceil(cols/128)] f32, from element params.scale_base
//
// Dispatch: (ceil(cols / 128), ceil(band_rows / 128)): one workgroup per block; its invocations
// take the block's columns in turn, row by row, twice (amax, then codes), with one reduction.

struct Params {
  band_rows: u32,  // rows of W in this call (source rows)
  cols: u32,       // W's columns
  first_row: u32,  // W's row held in source row 0 (a multiple of 128)
  col_blocks: u32, // ceil(cols / 128): the row stride of scales
  code_word: u32,  // word of W[0, 0] in codes
  scale_base: u32, // element of S[0, 0] in scales
}

const BLOCK = 128u;
const SMALLEST_NORMAL = 1.17549435e-38; // 2^-126

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<u32>;
@group(0) @binding(2) var<storage, read_write> codes: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> scales: array<f32>;

var<workgroup> partial_amax: array<f32, WORKGROUP_SIZE>;

// Source element i (= band row * cols + column) as f32.
fn source_value(i: u32) -> f32 {
#if dtype == f32
  return bitcast<f32>(source[i]);
#elif dtype == bf16
  return bitcast<f32>((source[i >> 1u] >> ((i & 1u) * 16u)) << 16u);
#else
  return bitcast<f32>(f16_to_f32_bits((source[i >> 1u] >> ((i & 1u) * 16u)) & 0xFFFFu));
#endif
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c0 = wid.x * BLOCK;
  let c1 = min(c0 + BLOCK, params.cols);
  let r0 = wid.y * BLOCK;
  let r1 = min(r0 + BLOCK, params.band_rows);

  var amax = 0.0;
  for (var r = r0; r < r1; r++) {
    for (var c = c0 + lid; c < c1; c += WORKGROUP_SIZE) {
      amax = max(amax, abs(source_value(r * params.cols + c)));
    }
  }
  partial_amax[lid] = amax;
  workgroupBarrier();
  for (var half = WORKGROUP_SIZE >> 1u; half > 0u; half >>= 1u) {
    if (lid < half) {
      partial_amax[lid] = max(partial_amax[lid], partial_amax[lid + half]);
    }
    workgroupBarrier();
  }
  let block_amax = partial_amax[0];
  let zero_block = block_amax < SMALLEST_NORMAL;
  let s = select(div_448(block_amax), 1.0, zero_block);
  if (lid == 0u) {
    let block_row = (params.first_row >> 7u) + wid.y;
    scales[params.scale_base + block_row * params.col_blocks + wid.x] = s;
  }
  if (zero_block) {
    return; // codes stay 0
  }
  for (var r = r0; r < r1; r++) {
    let row_element = (params.first_row + r) * params.cols; // W[row, 0], as an element index of W
    for (var c = c0 + lid; c < c1; c += WORKGROUP_SIZE) {
      let code = f32_to_e4m3(source_value(r * params.cols + c) / s);
      let element = row_element + c;
      atomicOr(&codes[params.code_word + (element >> 2u)], code << ((element & 3u) * 8u));
    }
  }
}
