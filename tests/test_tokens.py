"""Token files: tight bit packing, self-description, atomic writes, precise rejection of damaged or foreign files,
and export for language-model pipelines."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch

from codecfw.core.tokenizer.tokens import (MAGIC, SUFFIX, TokenFile, TokenFileCorrupt, TokenFileError, TokenFileMismatch,
                                 bits_for, export_tokens, pack_tokens, token_matrix, unpack_tokens)
from codecfw.core.types import TokenStream

STREAMS = (TokenStream("semantic", 50.0, 32768), TokenStream("acoustic", 50.0, 8192))


def make_file(length: int = 301, seed: int = 0, streams=STREAMS, config_hash: str = "0123456789ab") -> TokenFile:
    rng = np.random.default_rng(seed)
    tokens = {s.name: rng.integers(0, s.codebook_size, size=length) for s in streams}
    tokens[streams[0].name][:2] = [0, streams[0].codebook_size - 1]  # extremes survive packing
    return TokenFile(codec="semanticodec-100tps.32k", config_hash=config_hash, sample_rate=16000,
                     num_samples=length * 320 - 17, streams=streams, tokens=tokens,
                     metadata={"source": "a/b.flac", "source_sample_rate": 44100})


@pytest.mark.parametrize("size,bits", [(2, 1), (3, 2), (16, 4), (17, 5), (1000, 10), (1024, 10), (1025, 11),
                                       (8192, 13), (32768, 15), (65536, 16), (2 ** 20 + 1, 21)])
def test_bits_are_the_ceiling_of_log2(size, bits):
    assert bits_for(size) == bits


@pytest.mark.parametrize("bits", [1, 3, 7, 8, 10, 13, 15, 16, 21, 32, 33])
def test_pack_unpack_round_trip_and_tight_size(bits):
    rng = np.random.default_rng(bits)
    n = 70_003  # more than one internal block, not a multiple of 8
    values = rng.integers(0, 2 ** bits, size=n, dtype=np.int64)
    values[:2] = [0, 2 ** bits - 1]
    packed = pack_tokens(values, bits)
    assert len(packed) == (n * bits + 7) // 8
    np.testing.assert_array_equal(unpack_tokens(packed, bits, n), values)


def test_round_trip_preserves_everything(tmp_path):
    tf = make_file()
    path = tf.save(tmp_path / f"x{SUFFIX}")
    back = TokenFile.load(path)
    assert (back.codec, back.config_hash, back.sample_rate, back.num_samples) == \
        (tf.codec, tf.config_hash, tf.sample_rate, tf.num_samples)
    assert back.streams == tf.streams
    assert back.metadata == tf.metadata
    for s in STREAMS:
        np.testing.assert_array_equal(back.tokens[s.name], tf.tokens[s.name])
    assert back.duration == pytest.approx(tf.num_samples / 16000)


def test_file_is_self_describing_and_tightly_packed(tmp_path):
    tf = make_file(length=1000)
    data = tf.to_bytes()
    assert data[:8] == MAGIC
    version, header_len = struct.unpack_from("<H", data, 8)[0], struct.unpack_from("<I", data, 12)[0]
    assert version == 1
    header = json.loads(data[16:16 + header_len])
    assert header["codec"] == "semanticodec-100tps.32k" and header["config_hash"] == "0123456789ab"
    assert header["sample_rate"] == 16000 and header["num_samples"] == tf.num_samples
    assert [(s["name"], s["frame_rate"], s["codebook_size"], s["bits"]) for s in header["streams"]] == \
        [("semantic", 50.0, 32768, 15), ("acoustic", 50.0, 8192, 13)]
    payload = (1000 * 15 + 7) // 8 + (1000 * 13 + 7) // 8
    assert len(data) == 16 + header_len + payload + 4
    assert tf.payload_bytes() == payload
    # 28 bits per frame pair instead of 2 x 64 for int64 arrays
    assert payload < 1000 * 2 * 8 / 4


def test_damaged_file_is_rejected_as_damaged(tmp_path):
    data = bytearray(make_file().to_bytes())
    data[-40] ^= 0x10  # one flipped bit in the payload
    with pytest.raises(TokenFileCorrupt, match="damaged: checksum mismatch"):
        TokenFile.from_bytes(bytes(data), "x.cfwt")
    header_byte = bytearray(make_file().to_bytes())
    header_byte[30] ^= 0x01  # inside the JSON header
    with pytest.raises(TokenFileCorrupt, match="damaged|malformed"):
        TokenFile.from_bytes(bytes(header_byte), "x.cfwt")


@pytest.mark.parametrize("keep", [0.99, 0.5, 40 / 1000, 10 / 1000])
def test_truncated_file_is_rejected_as_truncated(tmp_path, keep):
    data = make_file(length=1000).to_bytes()
    cut = data[:max(1, int(len(data) * keep))]
    path = tmp_path / "cut.cfwt"
    path.write_bytes(cut)
    with pytest.raises(TokenFileCorrupt, match="truncated") as info:
        TokenFile.load(path)
    assert str(path) in str(info.value)


def test_other_files_and_versions_are_rejected(tmp_path):
    wav = tmp_path / "a.cfwt"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(100))
    with pytest.raises(TokenFileCorrupt, match="not a codecfw token file"):
        TokenFile.load(wav)
    future = bytearray(make_file().to_bytes())
    future[8:10] = struct.pack("<H", 9)
    with pytest.raises(TokenFileCorrupt, match="version 9 is newer"):
        TokenFile.from_bytes(bytes(future))
    with pytest.raises(TokenFileCorrupt, match="trailing"):
        TokenFile.from_bytes(make_file().to_bytes() + b"\x00")
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenFile.load(tmp_path / "missing.cfwt")


def test_foreign_tokens_are_rejected_naming_both_codecs():
    tf = make_file()
    tf.check_compatible("semanticodec-100tps.32k", "0123456789ab", STREAMS)  # its own codec: fine
    with pytest.raises(TokenFileMismatch) as info:
        tf.check_compatible("xcodec-hubert-librispeech", "ffffffffffff", STREAMS, "t.cfwt")
    msg = str(info.value)
    assert "t.cfwt" in msg and "semanticodec-100tps.32k" in msg and "0123456789ab" in msg
    assert "xcodec-hubert-librispeech" in msg and "ffffffffffff" in msg
    with pytest.raises(TokenFileMismatch, match="stream layout"):
        tf.check_compatible("semanticodec-100tps.32k", "0123456789ab", (TokenStream("semantic", 50.0, 16384),
                                                                         STREAMS[1]))


def test_invalid_tokens_are_refused_before_writing():
    with pytest.raises(ValueError, match="'acoustic': token 8192 outside"):
        TokenFile("c", "h", 16000, 320, STREAMS, {"semantic": [1], "acoustic": [8192]})
    with pytest.raises(ValueError, match="streams"):
        TokenFile("c", "h", 16000, 320, STREAMS, {"semantic": [1]})


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out" / "t.cfwt"
    make_file(seed=1).save(path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        make_file(seed=2).save(path)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.cfwt"]  # no temporary left behind


def test_export_npy_layouts_and_pt(tmp_path):
    tf = make_file(length=50)
    stacked = token_matrix(tf)
    assert stacked.shape == (2, 50) and stacked.dtype == np.int16  # 32768 entries fit int16
    np.testing.assert_array_equal(stacked[1], tf.tokens["acoustic"])
    inter = token_matrix(tf, "interleaved")
    np.testing.assert_array_equal(inter[:4], [tf.tokens["semantic"][0], tf.tokens["acoustic"][0],
                                              tf.tokens["semantic"][1], tf.tokens["acoustic"][1]])
    export_tokens(tf, tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), stacked)
    export_tokens(tf, tmp_path / "a.pt")
    blob = torch.load(tmp_path / "a.pt", weights_only=True)
    assert blob["config_hash"] == tf.config_hash and blob["num_samples"] == tf.num_samples
    assert torch.equal(blob["tokens"]["semantic"], torch.from_numpy(tf.tokens["semantic"]))
    big = make_file(streams=(TokenStream("a", 50.0, 65536),), length=5)
    assert token_matrix(big).dtype == np.int32


def test_export_refuses_ragged_streams_for_npy(tmp_path):
    streams = (TokenStream("coarse", 25.0, 1024), TokenStream("fine", 50.0, 1024))
    tf = TokenFile("c", "h", 16000, 16000, streams, {"coarse": np.zeros(25, int), "fine": np.zeros(50, int)})
    with pytest.raises(ValueError, match=r"different lengths.*\.pt"):
        export_tokens(tf, tmp_path / "x.npy")
    export_tokens(tf, tmp_path / "x.pt")  # the dict format takes any lengths
    assert torch.load(tmp_path / "x.pt", weights_only=True)["tokens"]["fine"].shape == (50,)
