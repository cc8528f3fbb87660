"""Token files: a small self-describing container for the tokens of one recording.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89CFWTOK\\n"   (PNG-style: a high-bit byte and a newline catch text-mode mangling)
    8       2     format version (u16), currently 1
    10      2     reserved (u16, 0)
    12      4     header length H in bytes (u32)
    16      H     header: UTF-8 JSON (codec id, config hash, sample rate, original length, streams, metadata)
    16+H    P     payload: each stream's tokens bit-packed at ceil(log2(codebook_size)) bits, streams in header order,
                  each stream starting on a byte boundary
    16+H+P  4     CRC-32 (u32) of every byte before it

Each stream in the header records ``name``, ``frame_rate``, ``codebook_size``, ``bits``, ``length`` (tokens) and
``nbytes``, so a reader checks the file size before it trusts a single token. Every header value is checked against
its range before anything is allocated from it (:func:`check_header`): a sample rate in [1, 10⁶] Hz, positive frame
rates and codebook sizes, and a ``num_samples`` of at least 1 that the tokens can account for (at most twice the
duration of the longest stream, plus a second), so a 1 KiB file cannot make a decoder allocate terabytes. Errors say *which* failure happened:
:class:`TokenFileCorrupt` for a truncated, damaged or malformed file, :class:`TokenFileMismatch` for tokens written
by another codec (config hash or stream layout differ). Files are written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_path
from ..types import TokenStream

MAGIC = b"\x89CFWTOK\n"
VERSION = 1
SUFFIX = ".cfwt"
_PREFIX = struct.Struct("<8sHHI")  # magic, version, reserved, header length
_CRC = struct.Struct("<I")
_MAX_HEADER = 16 << 20
MAX_SAMPLE_RATE = 1_000_000
MAX_CODEBOOK_SIZE = 1 << 32
_BLOCK = 1 << 16  # tokens packed per block: bounds the temporary bit arrays (multiple of 8 keeps byte alignment)


class TokenFileError(ValueError):
    """A token file cannot be used. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        self.path = str(path) if path is not None else "<tokens>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TokenFileCorrupt(TokenFileError):
    """Not a token file, truncated, damaged (checksum mismatch) or with a malformed header."""


class TokenFileMismatch(TokenFileError):
    """A valid token file written by a different codec than the one asked to decode it."""


def bits_for(codebook_size: int) -> int:
    """Bits a token takes in the packed payload: ``ceil(log2(codebook_size))``, at least 1."""
    return max(1, (int(codebook_size) - 1).bit_length())


def pack_tokens(tokens: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers below ``2**bits`` at ``bits`` bits each, LSB first. tokens : int array[T]."""
    values = np.ascontiguousarray(tokens, dtype="<u8").reshape(-1)
    out = []
    for start in range(0, len(values), _BLOCK):
        block = values[start:start + _BLOCK]
        bitplane = np.unpackbits(block.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :bits]
        out.append(np.packbits(bitplane.reshape(-1), bitorder="little").tobytes())
    return b"".join(out)


def unpack_tokens(data: bytes | memoryview, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack_tokens`: ``length`` tokens as ``int64 array[length]``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(length, dtype=np.int64)
    block_bytes = _BLOCK * bits // 8
    for i, start in enumerate(range(0, length, _BLOCK)):
        n = min(_BLOCK, length - start)
        chunk = buf[i * block_bytes: i * block_bytes + (n * bits + 7) // 8]
        bitplane = np.unpackbits(chunk, bitorder="little")[: n * bits].reshape(n, bits)
        wide = np.zeros((n, 64), dtype=np.uint8)
        wide[:, :bits] = bitplane
        out[start:start + n] = np.packbits(wide, axis=1, bitorder="little").view("<u8").reshape(-1)
    return out


@dataclass
class TokenFile:
    """The tokens of one recording plus everything needed to decode them with the right codec.

    codec : str
        Codec id: the pretrained name, or the recipe name of a checkpoint.
    config_hash : str
        Hash of the codec's resolved recipe (:meth:`RecipeBase.config_hash`); decoding checks it.
    sample_rate : int
        The codec's sample rate; ``num_samples`` counts samples at this rate.
    num_samples : int
        Length of the encoded audio at ``sample_rate`` (after resampling), so decoding restores the exact length.
    streams : tuple[TokenStream, ...]
        Name, frame rate and codebook size of each stream, in the codec's order.
    tokens : dict[str, np.ndarray]
        ``int64 array[T]`` per stream.
    metadata : dict
        Free-form JSON-serialisable extras (source path, source sample rate and channels, codecfw version, ...).
    """

    codec: str
    config_hash: str
    sample_rate: int
    num_samples: int
    streams: tuple[TokenStream, ...]
    tokens: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.streams = tuple(self.streams)
        self.tokens = {k: np.asarray(_to_numpy(v), dtype=np.int64).reshape(-1) for k, v in self.tokens.items()}
        names = [s.name for s in self.streams]
        if sorted(names) != sorted(self.tokens):
            raise ValueError(f"tokens have streams {sorted(self.tokens)} but the stream list names {names}")
        for s in self.streams:
            values = self.tokens[s.name]
            if values.size and (values.min() < 0 or values.max() >= s.codebook_size):
                bad = values[(values < 0) | (values >= s.codebook_size)][0]
                raise ValueError(f"stream {s.name!r}: token {int(bad)} outside [0, {s.codebook_size})")

    # -- derived ----------------------------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Seconds of audio these tokens encode."""
        return self.num_samples / self.sample_rate

    def lengths(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.tokens.items()}

    def payload_bytes(self) -> int:
        return sum((len(self.tokens[s.name]) * bits_for(s.codebook_size) + 7) // 8 for s in self.streams)

    def as_tensors(self) -> dict[str, "Any"]:
        """``{stream: LongTensor[1 x T]}``, the batch-of-one layout ``Codec.decode`` takes."""
        import torch

        return {k: torch.from_numpy(v.copy()).unsqueeze(0) for k, v in self.tokens.items()}

    def check_compatible(self, codec: str, config_hash: str, streams: Sequence[TokenStream],
                         path: str | os.PathLike | None = None) -> None:
        """Raise :class:`TokenFileMismatch` unless these tokens were written by the codec described."""
        if self.config_hash != config_hash:
            raise TokenFileMismatch(path, f"tokens were written by codec {self.codec!r} (config {self.config_hash}) "
                                          f"but the loaded codec is {codec!r} (config {config_hash}); decode them "
                                          f"with the checkpoint that wrote them")
        mine = [(s.name, float(s.frame_rate), s.codebook_size) for s in self.streams]
        theirs = [(s.name, float(s.frame_rate), s.codebook_size) for s in streams]
        if mine != theirs:
            raise TokenFileMismatch(path, f"stream layout {mine} differs from the codec's {theirs} although the "
                                          f"config hash {config_hash} matches")

    # -- serialisation ----------------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": "codecfw-tokens",
            "codec": self.codec,
            "config_hash": self.config_hash,
            "sample_rate": int(self.sample_rate),
            "num_samples": int(self.num_samples),
            "streams": [{"name": s.name, "frame_rate": float(s.frame_rate), "codebook_size": int(s.codebook_size),
                         "bits": bits_for(s.codebook_size), "length": int(len(self.tokens[s.name])),
                         "nbytes": (len(self.tokens[s.name]) * bits_for(s.codebook_size) + 7) // 8}
                        for s in self.streams],
            "checksum": "crc32",
            "metadata": self.metadata,
        }

    def to_bytes(self) -> bytes:
        header = json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode()
        parts = [_PREFIX.pack(MAGIC, VERSION, 0, len(header)), header]
        parts += [pack_tokens(self.tokens[s.name], bits_for(s.codebook_size)) for s in self.streams]
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; returns the path."""
        path = Path(path)
        data = self.to_bytes()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    @classmethod
    def from_bytes(cls, data: bytes, path: str | os.PathLike | None = None) -> "TokenFile":
        if len(data) < _PREFIX.size:
            if MAGIC.startswith(data[:8]) and data:
                raise TokenFileCorrupt(path, f"truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte "
                                             f"preamble")
            raise TokenFileCorrupt(path, "not a codecfw token file (too short, no magic number)")
        magic, version, _, header_len = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise TokenFileCorrupt(path, f"not a codecfw token file (magic {magic!r}, expected {MAGIC!r})")
        if version > VERSION:
            raise TokenFileCorrupt(path, f"token file format version {version} is newer than this codecfw reads "
                                         f"(up to {VERSION}); upgrade codecfw")
        if version < 1:
            raise TokenFileCorrupt(path, f"damaged: invalid format version {version}")
        if header_len > _MAX_HEADER:
            raise TokenFileCorrupt(path, f"damaged: header length {header_len} is implausible")
        head_end = _PREFIX.size + header_len
        if len(data) < head_end + _CRC.size:
            raise TokenFileCorrupt(path, f"truncated: {len(data)} bytes, but the header alone needs {head_end} "
                                         f"(interrupted write or incomplete copy?)")
        try:
            header = json.loads(data[_PREFIX.size:head_end])
            streams_meta = header["streams"]
            payload = sum(int(s["nbytes"]) for s in streams_meta)
        except RecursionError:
            raise TokenFileCorrupt(path, "malformed header: JSON nested too deeply") from None
        except (ValueError, KeyError, TypeError) as exc:
            # An unparsable header is damage unless the checksum says otherwise (then it is a writer bug).
            stored = _CRC.unpack_from(data, len(data) - _CRC.size)[0]
            if stored != zlib.crc32(memoryview(data)[:-_CRC.size]):
                raise TokenFileCorrupt(path, "damaged: header unreadable and checksum mismatch") from None
            raise TokenFileCorrupt(path, f"malformed header: {type(exc).__name__}: {exc}") from None
        expected = head_end + payload + _CRC.size
        if len(data) < expected:
            raise TokenFileCorrupt(path, f"truncated: {len(data)} bytes, the header declares {expected} "
                                         f"(interrupted write or incomplete copy?)")
        if len(data) > expected:
            raise TokenFileCorrupt(path, f"damaged: {len(data) - expected} unexpected trailing bytes after the "
                                         f"checksum ({expected} bytes declared)")
        stored = _CRC.unpack_from(data, expected - _CRC.size)[0]
        computed = zlib.crc32(memoryview(data)[:expected - _CRC.size])
        if stored != computed:
            raise TokenFileCorrupt(path, f"damaged: checksum mismatch (stored crc32 {stored:08x}, computed "
                                         f"{computed:08x}); the file was modified or corrupted")
        check_header(header, path)
        try:
            streams, tokens, offset = [], {}, head_end
            for meta in streams_meta:
                stream = TokenStream(str(meta["name"]), float(meta["frame_rate"]), int(meta["codebook_size"]))
                bits, length, nbytes = int(meta["bits"]), int(meta["length"]), int(meta["nbytes"])
                if bits != bits_for(stream.codebook_size) or nbytes != (length * bits + 7) // 8:
                    raise ValueError(f"stream {stream.name!r}: bits/length/nbytes inconsistent")
                tokens[stream.name] = unpack_tokens(memoryview(data)[offset:offset + nbytes], bits, length)
                streams.append(stream)
                offset += nbytes
            return cls(codec=str(header["codec"]), config_hash=str(header["config_hash"]),
                       sample_rate=int(header["sample_rate"]), num_samples=int(header["num_samples"]),
                       streams=tuple(streams), tokens=tokens, metadata=dict(header.get("metadata") or {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenFileCorrupt(path, f"malformed header: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenFile":
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise TokenFileError(path, f"cannot read: {exc.strerror or exc}") from None
        return cls.from_bytes(data, path)


def _integer(value: Any, key: str, low: int, high: int, path: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TokenFileCorrupt(path, f"malformed header: {key} must be an integer in [{low}, {high}], got "
                                     f"{str(value)[:40]!r}")
    return value


def check_header(header: Any, path: str | os.PathLike | None = None) -> None:
    """Raise :class:`TokenFileCorrupt` naming the key unless every header value is in range (module docstring)."""
    if not isinstance(header, dict) or not isinstance(header.get("streams"), list) or not header["streams"]:
        raise TokenFileCorrupt(path, "malformed header: expected a JSON object with a non-empty 'streams' list")
    sample_rate = _integer(header.get("sample_rate"), "sample_rate", 1, MAX_SAMPLE_RATE, path)
    seconds = 0.0
    for i, meta in enumerate(header["streams"]):
        if not isinstance(meta, dict):
            raise TokenFileCorrupt(path, f"malformed header: streams[{i}] must be an object")
        rate = meta.get("frame_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= sample_rate:
            raise TokenFileCorrupt(path, f"malformed header: streams[{i}].frame_rate must be in (0, sample_rate], "
                                         f"got {str(rate)[:40]!r}")
        _integer(meta.get("codebook_size"), f"streams[{i}].codebook_size", 1, MAX_CODEBOOK_SIZE, path)
        length = _integer(meta.get("length"), f"streams[{i}].length", 0, 1 << 48, path)
        seconds = max(seconds, (length + 1) / rate)
    limit = int((2 * seconds + 1) * sample_rate)
    num_samples = header.get("num_samples")
    _integer(num_samples, "num_samples", 1, 1 << 48, path)
    if num_samples > limit:
        raise TokenFileCorrupt(path, f"malformed header: num_samples {num_samples} ({num_samples / sample_rate:.4g} "
                                     f"s) is more than the tokens encode ({seconds:.4g} s at most)")


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor without importing torch here
        return values.detach().cpu().numpy()
    return np.asarray(values)


# ---------------------------------------------------------------------------------------------------------------
# Export for language-model pipelines
# ---------------------------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("npy", "pt")


def smallest_int_dtype(codebook_sizes: Sequence[int]) -> np.dtype:
    """The smallest *signed* integer dtype holding every token (signed: torch and most LM loaders lack uint16)."""
    top = max(codebook_sizes) - 1
    for dtype in (np.int16, np.int32):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def token_matrix(tf: TokenFile, layout: str = "stacked") -> np.ndarray:
    """All streams as one array: ``stacked`` gives ``[S x T]`` (stream order of the codec), ``interleaved`` gives
    ``[T*S]`` time-major (``s0[0], s1[0], ..., s0[1], ...``, the layout LMs over several codebooks often read).
    Requires every stream to have the same length."""
    lengths = {s.name: len(tf.tokens[s.name]) for s in tf.streams}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"streams have different lengths {lengths}; export to .pt (a dict per stream) instead")
    dtype = smallest_int_dtype([s.codebook_size for s in tf.streams])
    matrix = np.stack([tf.tokens[s.name] for s in tf.streams]).astype(dtype)
    if layout == "stacked":
        return matrix
    if layout == "interleaved":
        return np.ascontiguousarray(matrix.T).reshape(-1)
    raise ValueError(f"layout must be 'stacked' or 'interleaved', got {layout!r}")


def export_tokens(tf: TokenFile, path: str | os.PathLike, fmt: str | None = None, layout: str = "stacked") -> Path:
    """Write ``tf`` as ``.npy`` (:func:`token_matrix`) or ``.pt`` (a dict loadable with ``weights_only=True``:
    ``tokens`` {stream: LongTensor[T]}, ``streams``, ``codec``, ``config_hash``, ``sample_rate``, ``num_samples``).
    The format comes from ``fmt`` or the suffix. Atomic."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"{path}: export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    with atomic_path(path) as tmp:
        if fmt == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, token_matrix(tf, layout))
        else:
            import torch

            blob = {"tokens": {k: torch.from_numpy(v.copy()) for k, v in tf.tokens.items()},
                    "streams": [{"name": s.name, "frame_rate": float(s.frame_rate),
                                 "codebook_size": int(s.codebook_size)} for s in tf.streams],
                    "codec": tf.codec, "config_hash": tf.config_hash, "sample_rate": int(tf.sample_rate),
                    "num_samples": int(tf.num_samples)}
            torch.save(blob, tmp)
    return path

