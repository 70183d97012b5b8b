"""The HP container: a pruned model in one self-describing, checksummed file (design.md §5).

Layout (all integers little-endian)::

    magic       8 bytes   b"FITFHP\\r\\n"   (the CR LF catches text-mode mangling, as in PNG)
    version     u16       CONTAINER_VERSION
    header_len  u32       length of the JSON header
    header      JSON      model config, layer table, section table (see below)
    payload     bytes     the sections, back to back
    checksum    32 bytes  sha256 of everything before it

The header lists every section with its offset and length in the payload and its own
sha256. Sections:

- ``hp:<layer>/{block_rows,values,offsets}``: the bit-packed HP format of a pruned weight:
  block-row indices at ``ceil(log2(M / r))`` bits, values at the value width (fp32: IEEE
  bit patterns; ``fxW``: ``W``-bit two's complement codes of ``ap_fixed<W, I>``, ``I`` per
  tensor in the header), in-bank offsets at ``ceil(log2(c / B))`` bits (a stream is absent
  when its width is 0);
- ``tensors``: every other tensor of the model (embeddings, layer norms, biases, pooler,
  classifier) as safetensors bytes;
- ``file:<name>``: the tokenizer files, so the file alone rebuilds a usable model.

No pickle anywhere. Reading checks the magic, the version, every bound and both checksums
before it trusts a byte; any failure is a :class:`~fitformer.errors.FitformerError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fitformer._version import __version__
from fitformer.errors import FitformerError
from fitformer.formats.bits import index_bits
from fitformer.formats.formats import Encoded, HPFormat
from fitformer.models.fixed_point import int_bits, width_of
from fitformer.training.runs import strict_json

MAGIC = b"FITFHP\r\n"
CONTAINER_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_DIGEST = 32
MAX_HEADER_BYTES = 64 << 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")


def pack_uint(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers (< 2**width) into a big-endian bit stream."""
    if width == 0 or values.size == 0:
        return b""
    u = values.astype(np.uint64).ravel()
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((u[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_uint(data: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`: ``count`` integers of ``width`` bits (uint64)."""
    if width == 0 or count == 0:
        return np.zeros(count, np.uint64)
    need = math.ceil(count * width / 8)
    if len(data) != need:
        raise FitformerError(f"bit stream holds {len(data)} bytes, expected {need}")
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=count * width)
    weights = (np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64))
    return bits.reshape(count, width).astype(np.uint64) @ weights


def encode_values(values: np.ndarray, precision: str, int_bits_: int | None
                  ) -> tuple[np.ndarray, int]:
    """Stored codes of float values: fp32 bit patterns, or fixed-point two's complement.

    Returns:
        ``(codes as uint64, width in bits)``.
    """
    width = width_of(precision)
    if width is None:
        return values.astype(np.float32).view(np.uint32).astype(np.uint64), 32
    step = 2.0 ** (int_bits_ - width)
    q = np.clip(np.round(values.astype(np.float64) / step), -(2 ** (width - 1)),
                2 ** (width - 1) - 1).astype(np.int64)
    return (q & ((1 << width) - 1)).astype(np.uint64), width


def decode_values(codes: np.ndarray, precision: str, int_bits_: int | None) -> np.ndarray:
    """Inverse of :func:`encode_values` (float32)."""
    width = width_of(precision)
    if width is None:
        return codes.astype(np.uint32).view(np.float32)
    signed = codes.astype(np.int64)
    signed = np.where(signed >= 2 ** (width - 1), signed - 2 ** width, signed)
    return (signed * 2.0 ** (int_bits_ - width)).astype(np.float32)


@dataclass
class Container:
    """A read container: header, and accessors for the sections."""

    header: dict
    sections: dict[str, bytes] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return self.header["value_dtype"]

    def layer_names(self) -> list[str]:
        return list(self.header["layers"])

    def weight(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Decoded ``(weight, mask)`` of pruned layer ``name`` (float32, bool)."""
        info = self.header["layers"][name]
        r, c, B = info["r"], info["c"], info["B"]
        fmt = HPFormat(r, c, B)
        S, K1, k = info["S"], info["K1"], info["k"]
        n_vals = S * K1 * r * B * k
        w = info["widths"]
        block_rows = unpack_uint(self.sections.get(f"hp:{name}/block_rows", b""), S * K1,
                                 w["block_row"])
        codes = unpack_uint(self.sections[f"hp:{name}/values"], n_vals, w["value"])
        offsets = unpack_uint(self.sections.get(f"hp:{name}/offsets", b""), n_vals,
                              w["offset"])
        if w["block_row"] == 0:  # K1 == M / r: every block row, in order
            block_rows = np.tile(np.arange(K1, dtype=np.uint64), S)
        if w["offset"] == 0:     # k == c / B: every offset, in order
            offsets = np.tile(np.arange(k, dtype=np.uint64), n_vals // max(k, 1))
        Mb = info["padded"][0] // r
        if block_rows.size and int(block_rows.max()) >= Mb:
            raise FitformerError(f"container layer {name}: block-row index out of range")
        if offsets.size and int(offsets.max()) >= c // B:
            raise FitformerError(f"container layer {name}: bank offset out of range")
        enc = Encoded("hp", tuple(info["shape"]),
                      {"block_rows": block_rows.reshape(S, K1).astype(np.int64),
                       "values": decode_values(codes, self.precision, info.get("I")
                                               ).reshape(S, K1 * r, B, k),
                       "offsets": offsets.reshape(S, K1 * r, B, k).astype(np.int64)},
                      {"r": r, "c": c, "B": B, "K1": K1, "k": k,
                       "padded": tuple(info["padded"])})
        return fmt.decode(enc)


def write_container(path: Path, *, config: dict, layers: dict[str, tuple[torch.Tensor,
                    torch.Tensor]], other_tensors: dict[str, torch.Tensor],
                    files: dict[str, bytes], precision: str, block: tuple[int, int],
                    banks: int, pattern_params: dict, source: str) -> dict:
    """Write an HP container.

    Args:
        path: output file (written atomically).
        config: the model's ``config.json`` contents.
        layers: pruned layer name -> ``(weight (M, N) float, mask (M, N) bool)``.
        other_tensors: every other tensor of the state dict.
        files: tokenizer files to embed.
        precision: value dtype: ``fp32``, ``fx16`` or ``fx8``.
        block, banks: HP parameters ``(r, c)`` and ``B``.

    Returns:
        The header written.
    """
    from safetensors.torch import save

    r, c = block
    fmt = HPFormat(r, c, banks)
    sections: list[tuple[str, bytes]] = []
    table: dict[str, dict] = {}
    for name, (weight, mask) in layers.items():
        w = weight.detach().float().numpy()
        m = mask.numpy().astype(bool)
        ib = int_bits(float(np.abs(w[m]).max())) if width_of(precision) and m.any() else None
        enc = fmt.encode(w, m)
        p = enc.params
        Mb = p["padded"][0] // r
        widths = {"block_row": 0 if p["K1"] == Mb else index_bits(Mb),
                  "offset": 0 if p["k"] == fmt.bank_width else index_bits(fmt.bank_width)}
        codes, widths["value"] = encode_values(enc.arrays["values"].ravel(), precision, ib)
        sections.append((f"hp:{name}/values", pack_uint(codes, widths["value"])))
        if widths["block_row"]:
            sections.append((f"hp:{name}/block_rows",
                             pack_uint(enc.arrays["block_rows"], widths["block_row"])))
        if widths["offset"]:
            sections.append((f"hp:{name}/offsets",
                             pack_uint(enc.arrays["offsets"], widths["offset"])))
        table[name] = {"shape": list(enc.shape), "padded": list(p["padded"]), "r": r, "c": c,
                       "B": banks, "S": p["padded"][1] // c, "K1": p["K1"], "k": p["k"],
                       "widths": widths, "I": ib, "nnz": int(m.sum())}
    sections.append(("tensors", save({k: v.detach().contiguous()
                                      for k, v in other_tensors.items()})))
    for fname, data in files.items():
        sections.append((f"file:{fname}", data))
    offset = 0
    index = []
    for name, data in sections:
        index.append({"name": name, "offset": offset, "length": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
        offset += len(data)
    header = {"format": "fitformer-hp-container", "version": CONTAINER_VERSION,
              "fitformer_version": __version__, "value_dtype": precision,
              "pattern": {"name": "hp", **pattern_params}, "source": source,
              "config": config, "layers": table, "sections": index}
    # Strict JSON (issue 17): a non-finite number would be a bare NaN no other reader takes.
    blob = json.dumps(strict_json(header), sort_keys=True, allow_nan=False).encode()
    body = _PREFIX.pack(MAGIC, CONTAINER_VERSION, len(blob)) + blob + b"".join(
        d for _, d in sections)
    path = Path(path)
    if path.is_dir():
        raise FitformerError(f"--out {path} is a directory; give a file name, e.g. model.fitf.")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(body + hashlib.sha256(body).digest())
        tmp.replace(path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise FitformerError(f"cannot write --out {path} ({exc.strerror}); check that its "
                             "folder exists and is writable.") from None
    return header


_MAX_ELEMENTS = 1 << 28


def _validate_header(header: dict, sections: dict[str, bytes]) -> None:
    """Check every header field the decoder trusts (types, ranges, widths, sections), so an
    edited header with recomputed checksums is an error, never a crash or wrong weights.

    Raises:
        ValueError / KeyError / TypeError: caught by :func:`read_container`.
    """
    if not isinstance(header.get("config"), dict) or "model_type" not in header["config"]:
        raise ValueError("config must be an object with model_type")
    if header.get("value_dtype") not in ("fp32", "fx16", "fx8"):
        raise ValueError(f"value_dtype {header.get('value_dtype')!r} is not fp32, fx16 or fx8")
    if "tensors" not in sections:
        raise ValueError("the tensors section is missing")
    width = width_of(header["value_dtype"]) or 32
    for name, info in header["layers"].items():
        r, c, B, S, K1, k = (int(info[x]) for x in ("r", "c", "B", "S", "K1", "k"))
        M, N = (int(x) for x in info["shape"])
        Mp, Np = (int(x) for x in info["padded"])
        if min(r, c, B, M, N) < 1 or c % B or Mp != -(-M // r) * r or Np != -(-N // c) * c:
            raise ValueError(f"layer {name}: inconsistent shape or block parameters")
        if Mp * Np > _MAX_ELEMENTS or S != Np // c or not 0 <= K1 <= Mp // r \
                or not 0 <= k <= c // B:
            raise ValueError(f"layer {name}: counts out of range")
        widths = info["widths"]
        expected = {"block_row": 0 if K1 == Mp // r else index_bits(Mp // r),
                    "offset": 0 if k == c // B else index_bits(c // B), "value": width}
        if {key: widths.get(key) for key in expected} != expected:
            raise ValueError(f"layer {name}: field widths {widths} differ from {expected}")
        ib = info.get("I")
        if width != 32 and not (isinstance(ib, int) and -64 <= ib <= 64):
            raise ValueError(f"layer {name}: integer bits I = {ib!r} out of range")
        n_vals = S * K1 * r * B * k
        need = {"values": (n_vals, widths["value"]), "block_rows": (S * K1, widths["block_row"]),
                "offsets": (n_vals, widths["offset"])}
        for part, (count, bits) in need.items():
            data = sections.get(f"hp:{name}/{part}")
            if bits and (data is None or len(data) != math.ceil(count * bits / 8)):
                raise ValueError(f"layer {name}: section {part} missing or of the wrong size")


def read_container(path: Path) -> Container:
    """Read and verify an HP container.

    Raises:
        FitformerError: missing file, wrong magic or version, truncation, checksum mismatch,
            malformed header or out-of-bounds section (the message names the file).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FitformerError(f"container {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise FitformerError(f"{path} is a directory; give a .fitf container file.") from None
    except OSError as exc:
        raise FitformerError(f"cannot read {path} ({exc}).") from None

    def bad(why: str) -> FitformerError:
        return FitformerError(f"{path} is not a valid HP container: {why}. Re-export it with "
                              "`fitformer export`.")

    if len(data) < _PREFIX.size + _DIGEST:
        raise bad(f"truncated ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise bad("wrong magic bytes")
    if version != CONTAINER_VERSION:
        raise FitformerError(
            f"{path} is HP container version {version}; this fitformer "
            f"({__version__}) reads version {CONTAINER_VERSION}. Re-export it or upgrade.")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise bad("checksum mismatch (the file is truncated or corrupted)")
    if header_len > min(MAX_HEADER_BYTES, len(body) - _PREFIX.size):
        raise bad("header length out of range")
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + header_len])
        sections_index = header["sections"]
        payload = body[_PREFIX.size + header_len:]
        sections = {}
        for s in sections_index:
            start, length = int(s["offset"]), int(s["length"])
            if start < 0 or length < 0 or start + length > len(payload):
                raise bad(f"section {s['name']} out of bounds")
            chunk = payload[start:start + length]
            if hashlib.sha256(chunk).hexdigest() != s["sha256"]:
                raise bad(f"section {s['name']} checksum mismatch")
            sections[s["name"]] = chunk
        _validate_header(header, sections)
    except FitformerError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise bad(f"malformed header ({exc.__class__.__name__}: {exc})") from None
    return Container(header, sections)
