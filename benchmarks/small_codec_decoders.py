"""Decoder choice for the small 16 kHz codec: DAC-style generator vs Vocos backbone + iSTFT head, per CPU-second.

Both decoders sit in the same codec (recipes/sacodec_small_16k.yaml: DAC encoder, projector anchored to a frozen
codebook, residual SimVQ) and train with the same discriminators and losses; only ``decoder`` differs. Figures:

- parameters of the decoder and of the whole codec (frozen codebooks excluded);
- training step time: one generator turn and one discriminator turn (forward, backward, AdamW step each) on the
  recipe's batch, at 1 and 2 threads;
- decode (and encode) real-time factor on one thread: seconds of compute per second of audio, 10 s of audio;
- optionally (``--quality-steps N``) a short training of each variant through ``codecfw``'s loop and the mel distance
  of ``decode(encode(y))`` on held-out clips (the loop's validation: one-resolution log-mel L1).

The teacher is left out of the timed step (``semantic.teacher=null``): it is the same for both decoders;
``--teacher-cost`` adds the forward time of a randomly initialised encoder of Whisper tiny.en's shape on the batch.
Timings on a shared 2-core machine are noisy: the ratio between the two decoders, measured alternately in the same
process, is the figure to read.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/small_codec_decoders.py [--steps 5] [--threads 1,2]
        [--quality-steps 300 --train data/demo/train.jsonl --valid data/demo/valid.jsonl] [--teacher-cost]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes/sacodec_small_16k.yaml"
VARIANTS = {
    # comparable decoder sizes (about 4 M parameters each)
    "vocos": ["decoder={kind: vocos_istft, dim: 256, intermediate_dim: 768, num_layers: 8}"],
    "dac": ["decoder={kind: dac_generator, channels: 448, rates: [8, 5, 4, 2], semantic_head: {enabled: false}}"],
}
BASE = ["semantic.teacher=null", "semantic.codebook=null"]


def count(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6


def build(variant: str, extra: list[str]):
    from codecfw.core.codec import build_codec
    from codecfw.core.config import load_recipe
    from codecfw.core.training.objectives import AdversarialObjective, DiscriminatorSet
    from codecfw.core.registry import get_registry
    from codecfw.core.types import BuildContext

    registry = get_registry()
    recipe = load_recipe(RECIPE, BASE + VARIANTS[variant] + extra, registry)
    torch.manual_seed(0)
    codec = build_codec(recipe, registry)
    ctx = BuildContext(sample_rate=recipe.sample_rate)
    disc = DiscriminatorSet([registry.build("discriminator", c, ctx) for c in recipe.discriminators])
    losses = {c.kind: (registry.build("loss", c, ctx), float(c.weight)) for c in recipe.losses}
    objective = AdversarialObjective(codec, disc, disc, losses, recipe.train.loss_weights,
                                     discriminator_start=recipe.train.discriminator_start if any(
                                         o.startswith("train.discriminator_start") for o in extra) else 0)
    opts = {"generator": torch.optim.AdamW([p for p in codec.parameters() if p.requires_grad], lr=1e-4),
            "discriminator": torch.optim.AdamW(disc.parameters(), lr=1e-4)}
    return recipe, codec, disc, objective, opts


def step_time(variant: str, extra: list[str], threads: int, steps: int,
              turns: tuple[str, ...] = ("generator", "discriminator")) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one training step of ``turns`` on the recipe's batch."""
    torch.set_num_threads(threads)
    recipe, codec, _, objective, opts = build(variant, extra)
    codec.train()
    batch = {"waveform": torch.randn(recipe.data.batch_size, 1, int(recipe.data.segment_seconds * 16000)) * 0.1}
    walls, cpus = [], []
    for i in range(steps + 1):  # the first step (allocator, lazy init) is not timed
        t0, c0 = time.perf_counter(), time.process_time()
        objective.begin_step(i)
        for turn in turns:
            opts[turn].zero_grad(set_to_none=True)
            objective.step(batch, turn).loss.backward()
            opts[turn].step()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    # medians: robust to other jobs; CPU time (all threads) is what the step costs on a machine shared with others
    return sorted(walls[1:])[steps // 2], sorted(cpus[1:])[steps // 2]


@torch.inference_mode()
def rtf(variant: str, extra: list[str], seconds: float = 10.0, repeats: int = 3) -> tuple[float, float]:
    torch.set_num_threads(1)
    _, codec, *_ = build(variant, extra)
    codec.eval()
    y = torch.randn(1, 1, int(seconds * 16000)) * 0.1
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = codec.encode(y)
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        codec.decode(tokens, y.shape[-1])
        dec.append(time.perf_counter() - t0)
    return min(enc) / seconds, min(dec) / seconds


def teacher_cost(batch: int, seconds: float, threads: int) -> float:
    """Forward time of an encoder with Whisper tiny.en's shape (random weights) on ``batch`` clips of ``seconds``."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.set_num_threads(threads)
    frames = int(seconds * 100)  # 10 ms mel frames; the encoder's conv stride 2 gives 50 Hz
    config = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                           num_mel_bins=80, max_source_positions=frames // 2)
    encoder = WhisperEncoder(config).eval()
    x = torch.randn(batch, 80, frames)
    with torch.inference_mode():
        encoder(x)
        t0 = time.perf_counter()
        for _ in range(3):
            encoder(x)
    return (time.perf_counter() - t0) / 3


def quality(variant: str, extra: list[str], steps: int, train: str, valid: str, threads: int) -> dict:
    """Train ``steps`` steps through the loop and return the last validation's figures. Reconstruction losses only
    (``discriminator_start`` = ``steps``, no EMA): a few hundred steps measure how fast each decoder learns to
    reconstruct, which is what the long run's warm-up does before the discriminators start."""
    from codecfw.core.config import load_recipe
    from codecfw.core.registry import get_registry
    from codecfw.core.training.trainer import Trainer

    torch.set_num_threads(threads)
    registry = get_registry()
    recipe = load_recipe(RECIPE, BASE + VARIANTS[variant] + extra + [
        f"data.train={train}", f"data.valid={valid}", f"train.steps={steps}", f"train.valid_every={steps}",
        f"train.checkpoint_every={steps}", "train.log_every=25", "data.valid_clips=8", "train.warmup_steps=0",
        f"train.discriminator_start={steps}", "train.ema_decay=null"], registry)
    with tempfile.TemporaryDirectory(prefix=f"small-codec-{variant}-") as tmp:
        t0 = time.perf_counter()
        trainer = Trainer(recipe, registry=registry, run_dir=tmp, progress=False).setup()
        trainer.train()
        trainer.close()
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in open(Path(tmp) / "metrics.jsonl")]
    valid = [r for r in rows if r.get("split") == "valid"][-1]
    train_rows = [r for r in rows if r.get("split") == "train"]
    # the residual SimVQ path's drift (docs/sacodec.md): largest residual RMS in each window of 20 steps
    drift = [round(max(r["metric/residual_rms"] for r in train_rows if s <= r["step"] < s + 20), 2)
             for s in range(0, train_rows[-1]["step"], 20)] if "metric/residual_rms" in train_rows[-1] else []
    return {"mel_distance": valid["valid/log_mel_l1"], "valid_mel_loss": valid.get("valid/loss/mel"),
            "wall_s": wall, "residual_rms_per_20_steps": drift,
            "final_commitment": train_rows[-1].get("loss/commitment")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant and thread count")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[],
                        help="recipe override applied to both variants")
    parser.add_argument("--variants", default="vocos,dac")
    parser.add_argument("--quality-steps", type=int, default=0)
    parser.add_argument("--train", default=str(REPO / "data/demo/train.jsonl"))
    parser.add_argument("--valid", default=str(REPO / "data/demo/valid.jsonl"))
    parser.add_argument("--teacher-cost", action="store_true")
    parser.add_argument("--quality-only", action="store_true", help="skip the timings (parameters and quality)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    threads = [int(t) for t in args.threads.split(",")]

    rows: dict[str, dict] = {}
    for v in variants:
        _, codec, disc, *_ = build(v, args.overrides)
        rows[v] = {"decoder_M": count(codec.decoder), "codec_M": count(codec), "disc_M": count(disc)}
    for t in ([] if args.quality_only else threads):  # alternate the variants at each thread count so both see the same machine load
        for v in variants:
            rows[v][f"step_wall@{t}"], rows[v][f"step_cpu@{t}"] = step_time(v, args.overrides, t, args.steps)
    for v in ([] if args.quality_only else variants):  # before train.discriminator_start: the generator turn without adversarial terms
        objective_turns = ("generator",)
        rows[v]["recon_cpu@1"] = step_time(v, args.overrides + ["train.discriminator_start=1000000"], 1, args.steps,
                                           objective_turns)[1]
    for v in ([] if args.quality_only else variants):
        rows[v]["encode_rtf"], rows[v]["decode_rtf"] = rtf(v, args.overrides)
    if args.quality_steps:
        for v in variants:
            q = quality(v, args.overrides, args.quality_steps, args.train, args.valid, max(threads))
            rows[v].update({"mel_distance": q["mel_distance"], "train_wall_s": q["wall_s"]})
            print(f"{v}: {q}", flush=True)

    load = os.getloadavg()[0]
    print(f"small 16 kHz codec, decoder comparison (recipes/sacodec_small_16k.yaml; load average {load:.1f}; "
          f"overrides {args.overrides or 'none'})")
    keys = list(next(iter(rows.values())))
    print(f"{'variant':8s} " + " ".join(f"{k:>13s}" for k in keys))
    for v, row in rows.items():
        print(f"{v:8s} " + " ".join(f"{row[k]:13.4g}" for k in keys))
    if "vocos" in rows and "dac" in rows:
        print("ratio dac/vocos: " + ", ".join(f"{k} {rows['dac'][k] / rows['vocos'][k]:.2f}" for k in keys))
    if args.teacher_cost:
        from codecfw.core.config import load_recipe

        recipe = load_recipe(RECIPE, BASE)
        for t in threads:
            cost = teacher_cost(recipe.data.batch_size, recipe.data.segment_seconds, t)
            print(f"teacher (Whisper tiny.en-shaped encoder, random weights) forward on the batch, {t} thread(s): "
                  f"{cost:.3f} s")


if __name__ == "__main__":
    sys.exit(main())
