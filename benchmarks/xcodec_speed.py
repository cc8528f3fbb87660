"""Encode and decode real-time factors of codecfw's X-Codec and of transformers' ``XcodecModel``, same weights.

Both models get the same random weights (transformers' initialisation, random biases, Snake alphas and codebooks),
copied into codecfw with the X-Codec converter, and the same input; codes are checked to be identical before timing.
RTF = compute seconds / audio seconds (lower is faster); the ratio is codecfw / transformers (< 1: codecfw faster).
transformers' port ships fused weights; codecfw keeps DAC's weight-norm parametrizations for training, so it is also
timed with them folded (``remove_weight_norm``), the deployment setting.

    .venv/bin/python benchmarks/xcodec_speed.py            # the released architecture (HuBERT-base teacher), 10 s
    .venv/bin/python benchmarks/xcodec_speed.py --small    # a 0.4M-parameter configuration, 2 s

Timings on a shared CPU are noisy: the median of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build_models(small: bool, seed: int = 0):
    from transformers import HubertConfig, XcodecConfig, XcodecModel

    from codecfw.core.codec import build_codec
    from codecfw.core.config import validate_recipe
    from codecfw.plugins.nn.dac import remove_weight_norm
    from codecfw.plugins.pretrained.xcodec import recipe_from_transformers, transformers_to_codecfw

    torch.manual_seed(seed)
    if small:
        teacher = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
        acoustic = dict(encoder_hidden_size=8, downsampling_ratios=[8, 5, 4, 2], decoder_hidden_size=64,
                        upsampling_ratios=[8, 5, 4, 2], hidden_size=16)
    else:
        teacher = HubertConfig()  # facebook/hubert-base-ls960's architecture
        acoustic = {}
    config = XcodecConfig(acoustic_model_config=acoustic, semantic_model_config=teacher.to_dict(), codebook_size=1024)
    hf = XcodecModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("bias", "alpha")):
                p.add_(torch.randn_like(p) * 0.05)
        for i, q in enumerate(hf.quantizer.quantizers):
            q.codebook.embed.copy_(torch.randn_like(q.codebook.embed) * 0.05 / 1.5 ** i)
    recipe = validate_recipe(recipe_from_transformers(config.to_dict(), "bench"))
    state = transformers_to_codecfw(hf.state_dict())
    codecs = []
    for _ in range(2):  # as trained (weight-norm parametrizations) and folded for deployment
        codec = build_codec(recipe)
        codec.load_state_dict(state, strict=True)
        codecs.append(codec.eval())
    remove_weight_norm(codecs[1])
    return hf, codecs[0], codecs[1]


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(small: bool, seconds: float, batch: int, repeats: int, device: torch.device | str,
            models=None) -> dict:
    """Encode/decode RTFs of codecfw (as trained and weight norm folded) and transformers on one random batch.
    ``models``: ``build_models(small)``'s output, to reuse between batch sizes."""
    device = torch.device(device)
    hf, codec, folded = models or build_models(small)
    hf, codec, folded = hf.to(device), codec.to(device), folded.to(device)
    n = int(round(seconds * 16000 / 320)) * 320
    torch.manual_seed(1)
    x = (0.1 * torch.randn(batch, 1, n)).to(device)

    with torch.inference_mode():
        t_hf_enc, codes = timed(lambda: hf.encode(x, return_dict=False), repeats)
        t_cf_enc, tokens = timed(lambda: codec.encode(x), repeats)
        ours = torch.stack([tokens[f"rvq{i}"] for i in range(codes.shape[1])], 1)
        identical = bool(torch.equal(ours, codes))
        t_hf_dec, y_hf = timed(lambda: hf.decode(codes, return_dict=False), repeats)
        t_cf_dec, y_cf = timed(lambda: codec.decode(tokens, n), repeats)
        t_fo_enc, _ = timed(lambda: folded.encode(x), repeats)
        t_fo_dec, _ = timed(lambda: folded.decode(tokens, n), repeats)
        rel = float((y_cf - y_hf[..., :n]).norm() / y_hf[..., :n].norm())

    audio = seconds * batch
    rows = {"encode": (t_cf_enc / audio, t_hf_enc / audio), "decode": (t_cf_dec / audio, t_hf_dec / audio),
            "encode (codecfw weight norm folded)": (t_fo_enc / audio, t_hf_enc / audio),
            "decode (codecfw weight norm folded)": (t_fo_dec / audio, t_hf_dec / audio)}
    return {"small": small, "seconds": seconds, "batch": batch, "device": str(device), "repeats": repeats,
            "parameters_m": sum(p.numel() for p in codec.parameters()) / 1e6,
            "codes_identical": identical, "waveform_rel_diff": rel,
            "rtf": {k: {"codecfw": v[0], "transformers": v[1], "ratio": v[0] / v[1]} for k, v in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny configuration and 2 s of audio")
    parser.add_argument("--seconds", type=float, default=None, help="audio length (default 10, --small 2)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.seconds or (2.0 if args.small else 10.0)
    result = measure(args.small, seconds, args.batch, args.repeats, args.device)
    print(f"X-Codec {'small' if args.small else 'full-size'} ({result['parameters_m']:.1f}M parameters incl. "
          f"teacher), {args.batch} x {seconds:g} s at 16 kHz, {result['device']}, {torch.get_num_threads()} "
          f"thread(s), median of {args.repeats}")
    print(f"codes identical: {result['codes_identical']}; waveform relative difference: "
          f"{result['waveform_rel_diff']:.2e}")
    print(f"{'':36s} {'codecfw RTF':>12s} {'transformers RTF':>17s} {'ratio codecfw/transformers':>27s}")
    for name, r in result["rtf"].items():
        print(f"{name:36s} {r['codecfw']:12.4f} {r['transformers']:17.4f} {r['ratio']:27.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
