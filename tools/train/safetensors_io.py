"""Minimal safetensors writer and reader (no pip package here).

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data,
tensors back to back in header order. The header is padded with spaces to a multiple of 8.
"""

import json
import struct

import numpy as np

# numpy dtype of the raw bytes for each safetensors dtype we write.
RAW_DTYPES = {"F32": np.float32, "BF16": np.uint16, "F8_E4M3": np.uint8}


def write_safetensors(path: str, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None = None) -> int:
    """tensors: name -> (safetensors dtype, array of RAW_DTYPES[dtype]). Returns the file size."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    blobs = []
    for name, (dtype, array) in tensors.items():
        if array.dtype != RAW_DTYPES[dtype]:
            raise TypeError(f"{name}: {dtype} needs raw numpy dtype {RAW_DTYPES[dtype].__name__}, got {array.dtype}")
        blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)
    return 8 + len(header_bytes) + offset


def read_safetensors(path: str) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype, raw array), the inverse of write_safetensors."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data[begin:end], dtype=RAW_DTYPES[info["dtype"]])
        out[name] = (info["dtype"], raw.reshape(info["shape"]))
    return out
