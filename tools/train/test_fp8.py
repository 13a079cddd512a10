"""Checks of fp8.py and safetensors_io.py against hand-worked values (run by smoke.sh)."""

import os
import tempfile

import numpy as np

import fp8
from safetensors_io import read_safetensors, write_safetensors


def check_e4m3() -> None:
    assert fp8.E4M3_VALUES[0x7E] == 448 and fp8.E4M3_VALUES[1] == 2.0**-9 and fp8.E4M3_VALUES[0x38] == 1
    x = np.array([1.0625, 1.1875, 2.0**-10, 1.5 * 2.0**-9, 500, -3.3, -0.0, 0.0], dtype=np.float32)
    # ties go to the even code: 1.0625 -> 1.0 (0x38), 1.1875 -> 1.25 (0x3A), 2^-10 -> 0, 1.5*2^-9 -> 2*2^-9
    expected = [0x38, 0x3A, 0x00, 0x02, 0x7E, 0xC5, 0x80, 0x00]
    assert fp8.e4m3_encode(x).tolist() == expected, fp8.e4m3_encode(x).tolist()
    every_code = np.array([c for c in range(256) if c & 0x7F != 0x7F], dtype=np.uint8)
    assert np.array_equal(fp8.e4m3_encode(fp8.e4m3_decode(every_code)), every_code)


def check_block_quantization() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((200, 300)).astype(np.float32)
    codes, scale = fp8.quantize_block_fp8(w)
    assert scale.shape == (2, 3) and scale[1, 2] == np.abs(w[128:, 256:]).max() / np.float32(448)
    back = fp8.dequantize_block_fp8(codes, scale)
    # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normal values
    assert np.all(np.abs(back - w) <= np.abs(w) * 2.0**-4 + scale.max() * 2.0**-9)


def check_bf16_and_safetensors() -> None:
    x = np.array([1.00390625, 1.01171875, -2.5], dtype=np.float32)  # two ties, one exact
    assert fp8.bf16_decode(fp8.bf16_encode(x)).tolist() == [1.0, 1.015625, -2.5]
    tensors = {"a": ("BF16", fp8.bf16_encode(x)), "b": ("F8_E4M3", np.arange(6, dtype=np.uint8).reshape(2, 3)), "c": ("F32", x)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.safetensors")
        size = write_safetensors(path, tensors)
        assert size == os.path.getsize(path)
        back = read_safetensors(path)
    assert all(back[k][0] == v[0] and np.array_equal(back[k][1], v[1]) for k, v in tensors.items())


if __name__ == "__main__":
    check_e4m3()
    check_block_quantization()
    check_bf16_and_safetensors()
    print("test_fp8: OK")
