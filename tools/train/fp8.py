"""FP8 (e4m3fn) and BF16 encoding in numpy, and DeepSeek-V3's 128x128 block quantisation.

torch 1.13 has no float8 or safetensors support, so the bit patterns are made here.
Spec: src/model/MATH.md (the project's account of the official inference code) section 3: W[i, j] = e4m3(Q[i, j]) * S[i // 128, j // 128], S = amax(|block|) / 448.
"""

import numpy as np

E4M3_MAX = 448.0
BLOCK = 128


def _e4m3_code_values() -> np.ndarray:
    """Values of the 127 non-negative finite codes 0x00..0x7E, increasing with the code."""
    codes = np.arange(0x7F)
    exponent = codes >> 3
    mantissa = (codes & 7).astype(np.float64)
    subnormal = mantissa / 8 * 2.0**-6
    normal = (1 + mantissa / 8) * 2.0 ** (exponent - 7)
    return np.where(exponent == 0, subnormal, normal)


E4M3_VALUES = _e4m3_code_values()  # [127] float64, E4M3_VALUES[0x7E] == 448


def e4m3_encode(x: np.ndarray) -> np.ndarray:
    """Round float values to the nearest e4m3fn code, ties to the even code; saturate at +-448.

    Returns uint8 codes `s eeee mmm`. Negative values (also those rounding to zero) get the sign
    bit, as a float8 cast does.
    """
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("e4m3_encode: input has NaN or infinity")
    magnitude = np.minimum(np.abs(x).astype(np.float64), E4M3_MAX)
    # hi: first code whose value is >= magnitude; lo: the one below it.
    hi = np.searchsorted(E4M3_VALUES, magnitude, side="left")
    lo = np.maximum(hi - 1, 0)
    dist_lo = magnitude - E4M3_VALUES[lo]
    dist_hi = E4M3_VALUES[hi] - magnitude
    # The mantissa's last bit is the code's last bit, so "even" is the even code.
    pick_hi = (dist_hi < dist_lo) | ((dist_hi == dist_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return code | np.where(np.signbit(x), np.uint8(0x80), np.uint8(0))


def e4m3_decode(codes: np.ndarray) -> np.ndarray:
    """uint8 e4m3fn codes -> float32 values (0x7F/0xFF, the NaNs, are rejected)."""
    codes = np.asarray(codes, dtype=np.uint8)
    magnitude_code = codes & 0x7F
    if np.any(magnitude_code == 0x7F):
        raise ValueError("e4m3_decode: NaN code")
    values = E4M3_VALUES[magnitude_code].astype(np.float32)
    return np.where(codes & 0x80, -values, values)


def quantize_block_fp8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[out, in] float32 -> (codes [out, in] uint8, weight_scale_inv [ceil(out/128), ceil(in/128)] f32).

    Edge blocks are partial (the released weights zero-pad to 128, which does not change amax).
    An all-zero block gets scale 1 so that no division by zero happens; its codes are 0.
    """
    weight = np.asarray(weight, dtype=np.float32)
    rows, cols = weight.shape
    block_rows, block_cols = -(-rows // BLOCK), -(-cols // BLOCK)
    scale = np.empty((block_rows, block_cols), dtype=np.float32)
    codes = np.empty((rows, cols), dtype=np.uint8)
    for bi in range(block_rows):
        for bj in range(block_cols):
            rs, cs = slice(bi * BLOCK, (bi + 1) * BLOCK), slice(bj * BLOCK, (bj + 1) * BLOCK)
            block = weight[rs, cs]
            amax = np.float32(np.abs(block).max())
            s = amax / np.float32(E4M3_MAX) if amax > 0 else np.float32(1)
            scale[bi, bj] = s
            codes[rs, cs] = e4m3_encode(block / s)
    return codes, scale


def dequantize_block_fp8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The engine's dequantisation: e4m3(Q) * S per 128x128 block, in float32."""
    values = e4m3_decode(codes)
    expanded = np.repeat(np.repeat(scale, BLOCK, axis=0), BLOCK, axis=1)
    return values * expanded[: codes.shape[0], : codes.shape[1]]


def bf16_encode(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    if not np.all(np.isfinite(x)):
        raise ValueError("bf16_encode: input has NaN or infinity")
    rounding = np.uint32(0x7FFF) + ((bits >> 16) & 1)
    return ((bits + rounding) >> 16).astype(np.uint16)


def bf16_decode(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
