"""SemantiCodec decode speed: codecfw against the reference pipeline on the same weights and step count, and peak
memory for a long input.

    .venv/bin/python benchmarks/semanticodec_speed.py [--small] [--reference-path PATH] [--threads N]

- ``--reference-path``: a checkout of haoheliu/SemantiCodec-inference (e.g. fetched to /work/.mirror). Its
  ``SemantiCodec.decode`` is timed on the same random weights (the reference's own state dict, converted with
  codecfw's official-checkpoint mapping) and tokens; without it only codecfw's figures are printed. The reference
  imports ``timm`` for AudioMAE's ViT block; when timm is missing a small stand-in (same names and maths) is put
  on ``sys.path``.
- ``--encode``: also times encoding ``--encode-seconds`` (default 10): the reference's ``SemantiCodec.encode``
  against ``Codec.encode`` of the codec ``codecfw import semanticodec`` would make from the reference's (random)
  state dicts.
- Decode: DDIM with ``--steps`` steps and guidance 2 for both (the reference's defaults: 50 steps, guidance 2),
  then codecfw with ``--fast-sampler`` at ``--fast-steps``.
- Memory: codecfw's streaming ``decode_tokens`` on 1 and ``--memory-minutes`` minutes of tokens (1 step, in
  fresh processes); the growth of the peak RSS over a one-batch warm-up is compared with the output buffer.
- ``--repeats N`` alternates the two pipelines N times and keeps each one's best time: with one repeat, whichever
  runs first also pays one-time costs (oneDNN primitive creation, first-touch of the weights).
- ``--roofline``: codecfw's time per window split into guided UNet steps, VAE decode and vocoder, their FLOPs, this
  machine's fp32 GEMM peak, and from them the largest equal-steps speed-up any exact fp32 decoder could show here.
- ``--small``: the fixtures' reduced architecture and 10 steps (a quick run); the memory check always uses it
  unless ``--memory-full``, since a full-size 10-minute decode takes hours on a CPU.

Timings on a shared machine are noisy: both pipelines run in the same process, alternately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(model_channels=32, channel_mult=[1, 2], attention_resolutions=[2], num_head_channels=16,
             num_res_blocks=1, vae_channels=32, vae_num_res_blocks=1, vocoder_channels=64)
SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------------------------
# Shared weights and tokens
# ---------------------------------------------------------------------------------------------------------------


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Redraw every parameter at the parity fixtures' scales (fan-in normal weights, small biases, norms near 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            t = torch.randn(p.shape, generator=gen)
            p.copy_(t / p[0].numel() ** 0.5 if p.ndim >= 2 else 0.02 * t if name.endswith("bias") else 1 + 0.1 * t)


class TableSlot:
    """A semantic or acoustic slot that only looks tokens up in a table (what decoding needs)."""

    def __init__(self, name: str, table: torch.Tensor, rate: float) -> None:
        self.name, self.table = name, table
        self.quantized_dim, self.frame_rate = table.shape[1], rate

    def streams(self):
        from codecfw.core.types import TokenStream

        return [TokenStream(self.name, self.frame_rate, self.table.shape[0])]

    def from_tokens(self, tokens, semantic=None):
        from codecfw.core.types import AcousticOutput, SemanticOutput

        q = self.table[tokens[self.name]].transpose(1, 2)
        return SemanticOutput(quantized=q) if semantic is None else AcousticOutput(quantized=q)


def codecfw_decoder(small: bool, k: int, steps: int, sem: TableSlot, ac: TableSlot, official_state=None, **over):
    from codecfw.core.types import BuildContext
    from codecfw.plugins.decoder.latent_diffusion import LatentDiffusionDecoder, LatentDiffusionDecoderConfig

    cfg = LatentDiffusionDecoderConfig(**(SMALL if small else {}), vae_encoder=False, steps=steps, **over)
    dec = LatentDiffusionDecoder(cfg, BuildContext(SAMPLE_RATE, sem, ac)).eval()
    if official_state is None:
        randomize_(dec)
    else:
        dec.load_state_dict(dec.convert_official(official_state), strict=True)
    return dec


# ---------------------------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------------------------


TIMM_STANDIN = {
    "timm/__init__.py": "",
    "timm/models/__init__.py": "",
    "timm/models/layers.py": "def to_2tuple(x):\n    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)\n",
    # A pre-norm ViT block with timm's parameter names (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) and
    # maths, enough for the reference's AudioMAE; written here, not copied from timm.
    "timm/models/vision_transformer.py": """
import torch
from torch import nn
import torch.nn.functional as F


class _Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, norm_layer=nn.LayerNorm, **_):
        super().__init__()
        self.norm1, self.attn = norm_layer(dim), _Attention(dim, num_heads, qkv_bias)
        self.norm2, self.mlp = norm_layer(dim), _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
""",
}


def import_reference(path: str):
    """Put the reference checkout (and, if timm is missing, a stand-in for its ViT block) on sys.path."""
    try:
        import timm  # noqa: F401
    except ImportError:
        shim = Path(tempfile.mkdtemp(prefix="timm_standin_"))
        for rel, text in TIMM_STANDIN.items():
            (shim / rel).parent.mkdir(parents=True, exist_ok=True)
            (shim / rel).write_text(text)
        sys.path.insert(0, str(shim))
    sys.path.insert(0, str(Path(path).resolve()))
    import semanticodec.main as main

    return main


def reference_codec(main, small: bool, token_rate: int, steps: int, sem_table, ac_table, device="cpu"):
    """``SemantiCodec`` built without checkpoints: random decoder weights and an encoder shell holding the token
    tables (all that ``decode`` uses), on ``device``."""
    import semanticodec.modules.decoder.latent_encoder.autoencoder as autoencoder
    from semanticodec.modules.decoder import hifigan
    from semanticodec.modules.decoder.latent_diffusion.util import instantiate_from_config
    from semanticodec.modules.encoder.encoder import AudioMAEConditionQuantResEncoder
    from vector_quantize_pytorch import VectorQuantize

    config = main.get_config(token_rate, 16384)[0]["model"]
    if small:
        config["params"]["unet_config"]["params"].update(
            model_channels=32, channel_mult=[1, 2], attention_resolutions=[2], num_head_channels=16, num_res_blocks=1)
        config["params"]["first_stage_config"]["params"]["ddconfig"].update(ch=32, num_res_blocks=1)
        original = autoencoder.get_vocoder

        def small_vocoder(cfg, device, mel_bins):
            voc = hifigan.Generator_old(hifigan.AttrDict(dict(
                resblock="1", upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
                upsample_initial_channel=64, resblock_kernel_sizes=[3, 7, 11],
                resblock_dilation_sizes=[[1, 3, 5]] * 3, num_mels=mel_bins)))
            voc.eval().remove_weight_norm()
            return voc

        autoencoder.get_vocoder = small_vocoder
    try:
        decoder = instantiate_from_config(config).eval()
    finally:
        if small:
            autoencoder.get_vocoder = original
    randomize_(decoder, seed=1)
    encoder = AudioMAEConditionQuantResEncoder.__new__(AudioMAEConditionQuantResEncoder)
    torch.nn.Module.__init__(encoder)
    encoder.centroid_npy = sem_table
    encoder.quantizer = VectorQuantize(dim=ac_table.shape[1], codebook_size=ac_table.shape[0], decay=0.9)
    encoder.quantizer._codebook.embed.data.copy_(ac_table[None])
    sc = main.SemantiCodec.__new__(main.SemantiCodec)
    torch.nn.Module.__init__(sc)
    sc.token_rate, sc.stack_factor_K, sc.ddim_sample_step, sc.cfg_scale = token_rate, 100 / token_rate, steps, 2.0
    device = torch.device(device)
    encoder.centroid_npy = encoder.centroid_npy.to(device)
    sc.device, sc.encoder, sc.decoder = device, encoder.to(device), decoder.to(device)
    return sc


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM belongs to the process's own address space; ru_maxrss would
    carry the parent's peak over from fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(args) -> None:
    """One fresh process: warm up on one batch of windows, then decode ``--memory-child`` seconds of tokens; print RSS."""
    k = 100 // args.token_rate
    torch.manual_seed(0)
    width = (64 if not args.memory_full else 768) * k
    sem, ac = TableSlot("semantic", torch.randn(256, width), 50 / k), TableSlot("acoustic", torch.randn(256, width), 50 / k)
    dec = codecfw_decoder(not args.memory_full, k, 1, sem, ac, window_batch_size=args.window_batch_size)

    def run(seconds: float) -> torch.Tensor:
        t = int(seconds * 50 / k)
        tokens = {"semantic": torch.randint(0, 256, (1, t)), "acoustic": torch.randint(0, 256, (1, t))}
        return dec.decode_tokens(tokens, sem, ac, int(seconds * SAMPLE_RATE))

    run(args.window_batch_size * 9.6 + 0.64)  # one full batch of windows: the per-batch working set
    base = peak_rss_mb()
    t0 = time.perf_counter()
    out = run(args.memory_child)
    peak = peak_rss_mb()
    print(json.dumps({"seconds": args.memory_child, "baseline_mb": base, "peak_mb": peak,
                      "output_mb": out.numel() * out.element_size() / 2 ** 20, "wall_s": time.perf_counter() - t0}))


def memory_report(args) -> None:
    results = []
    for seconds in (60.0, 60.0 * args.memory_minutes):
        cmd = [sys.executable, __file__, "--memory-child", str(seconds), "--token-rate", str(args.token_rate),
               "--threads", str(args.threads), "--window-batch-size", str(args.window_batch_size)]
        cmd += ["--memory-full"] if args.memory_full else []
        # glibc's adaptive mmap threshold would keep freed per-window buffers in the heap and blur peak RSS;
        # a fixed threshold returns them, so the figure reflects live memory.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
        if proc.returncode:
            print(f"memory run failed ({seconds} s):\n{proc.stderr[-2000:]}")
            return
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    arch = "full-size" if args.memory_full else "reduced (fixture) architecture"
    print(f"\npeak memory, codecfw decode_tokens ({arch}, 1 step, window batch {args.window_batch_size}):")
    for r in results:
        growth = r["peak_mb"] - r["baseline_mb"]
        print(f"  {r['seconds'] / 60:5.1f} min input: peak RSS {r['peak_mb']:8.1f} MB, growth over a one-batch "
              f"decode {growth:7.1f} MB, output buffer {r['output_mb']:6.1f} MB ({r['wall_s']:.0f} s)")
    extra = [r["peak_mb"] - r["baseline_mb"] - r["output_mb"] for r in results]
    print(f"  growth beyond the output buffer: {extra[0]:.1f} MB (1 min) vs {extra[1]:.1f} MB "
          f"({args.memory_minutes:g} min)")


def gemm_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate (best of ``repeats`` square GEMMs): what a perfect fp32 decoder
    could sustain."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    return 2 * size ** 3 / timed(lambda: a @ b, repeats)[0] / 1e9


def counted_gflops(fn) -> float:
    """FLOPs of ``fn()`` in GFLOP. SDPA runs its math backend while counting: the fused CPU kernels are invisible to
    ``FlopCounterMode``, and the attention products are real work."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops() / 1e9


def roofline(args, dec, windows: int, steps: int, ref_s: float | None) -> None:
    """Where codecfw's time goes per window, and the best speed-up any exact fp32 decoder could show here.

    An equal-steps decode of one window is ``steps`` guided UNet steps (both branches), one VAE decode and one
    vocoder pass. codecfw's FLOPs are the least this work needs (the context keys/values are already computed once),
    so ``windows x FLOPs / GEMM peak`` is a lower bound on any fp32 implementation's time on this CPU.
    """
    z = torch.randn(2, *dec.latent_shape).contiguous(memory_format=torch.channels_last)
    ctx = torch.randn(2, dec.window_tokens, dec.unet.config.cross_attention_dim)
    t = torch.tensor(500)
    mel = torch.randn(1, dec.latent_shape[1] * dec.vae_spec.downsample, dec.cfg.mel_bins)
    step = lambda: dec.unet(z, t, encoder_hidden_states=ctx, cross_attention_kwargs=kv)  # noqa: E731
    vae = lambda: dec.vae.decode(z[:1]).sample  # noqa: E731
    voc = lambda: dec.vocoder(mel)  # noqa: E731
    with torch.no_grad():
        kv = {"context_kv": dec.unet.context_kv(ctx)}  # once per window batch, as sampling does
        parts = [("guided UNet step", step, steps), ("VAE decode", vae, 1), ("vocoder", voc, 1)]
        rows = [(name, counted_gflops(fn), timed(fn, 2)[0], n) for name, fn, n in parts]
    peak = gemm_peak_gflops(args.threads)
    total_gflop = windows * sum(g * n for _, g, _, n in rows)
    print(f"\nwhere the time goes, per window (codecfw, {args.threads} thread(s)); fp32 GEMM peak here "
          f"{peak:.0f} GFLOP/s")
    for name, g, s_, n in rows:
        print(f"  {name:18s} {g:8.1f} GFLOP  {s_:7.3f} s  {g / s_:6.0f} GFLOP/s  x{n} per window")
    bound = total_gflop / peak
    print(f"  {windows} window(s) x {steps} steps: {total_gflop / 1e3:.2f} TFLOP, at least {bound:.1f} s at the GEMM "
          "peak" + (f": no exact fp32 decoder can beat the reference's {ref_s:.1f} s by more than "
                    f"{ref_s / bound:.2f}x on this machine" if ref_s else ""))


def encode_benchmark(args, main_mod, ref, k: int) -> None:
    """Encode ``--encode-seconds`` with the reference encoder and with the codecfw codec converted from its state
    dicts."""
    import numpy as np
    import torchaudio
    from semanticodec.modules.encoder.encoder import AudioMAEConditionQuantResEncoder

    from codecfw.core.codec import build_codec
    from codecfw.core.config import validate_recipe
    from codecfw.plugins.pretrained.semanticodec import convert_semanticodec

    torch.manual_seed(2)
    centroids = torch.randn(4096, 768 * k)
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "codebook_2048_0.npy"
        np.save(npy, centroids.numpy())
        encoder = AudioMAEConditionQuantResEncoder(centroid_npy_path=str(npy), feature_dimension=768 * k,
                                                   lstm_layer={1: 4, 2: 3, 4: 2}[k]).eval()
    randomize_(encoder, seed=3)
    ref.encoder = encoder
    semantic = {"reference_compat": True} if args.reference_compat else {}
    acoustic = {}
    if args.encode_batch is not None:
        semantic["max_batch_segments"] = acoustic["max_batch_windows"] = args.encode_batch
    batching = {"semantic": semantic, "acoustic": acoustic}
    converted = convert_semanticodec(encoder.state_dict(), ref.decoder.state_dict(), {4096: centroids}, k,
                                     vocab_size=4096, overrides={"decoder": SMALL if args.small else {}, **batching})
    codec = build_codec(validate_recipe(converted.recipe)).eval()
    codec.load_state_dict(converted.state_dict, strict=False)
    wav = 0.1 * torch.randn(1, int(args.encode_seconds * SAMPLE_RATE))
    load = torchaudio.load
    # The reference takes a file path; torchaudio.load needs torchcodec (absent), so it returns the tensor.
    torchaudio.load = lambda *_, **__: (wav, SAMPLE_RATE)
    try:
        with tempfile.NamedTemporaryFile(suffix=".wav") as f, torch.no_grad():
            ref_s, ref_tokens = timed(lambda: ref.encode(f.name), args.repeats)
            ours_s, ours_tokens = timed(lambda: codec.encode(wav[None]), args.repeats)
    finally:
        torchaudio.load = load
    n = min(ref_tokens.shape[1], ours_tokens["semantic"].shape[1])
    same = [100 * float((ref_tokens[0, :n, i] == ours_tokens[name][0, :n]).float().mean())
            for i, name in enumerate(["semantic", "acoustic"])]
    print(f"\nencode {args.encode_seconds:g} s: reference {ref_s:6.1f} s, codecfw {ours_s:6.1f} s, "
          f"speed-up {ref_s / ours_s:.2f}x "
          f"(equal tokens on the {n} common positions: semantic {same[0]:.1f}%, acoustic {same[1]:.1f}%)")
    per_segment = int(round(10.24 * 50 / k))
    for i, name in enumerate(["semantic", "acoustic"]):
        where = torch.nonzero(ref_tokens[0, :n, i] != ours_tokens[name][0, :n]).flatten()
        if len(where):
            counts = torch.bincount(where // per_segment).tolist()
            print(f"  {name} differences per 10.24 s segment: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="reduced architecture, 10 steps")
    parser.add_argument("--reference-path", help="SemantiCodec-inference checkout to time the reference")
    parser.add_argument("--token-rate", type=int, default=100, choices=[25, 50, 100])
    parser.add_argument("--seconds", type=float, default=None, help="audio to decode (default 20, --small 10.24)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps for both (default 50, --small 10)")
    parser.add_argument("--fast-sampler", default="dpmsolver++", choices=["dpmsolver++", "unipc", "ddim"])
    parser.add_argument("--fast-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--window-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per pipeline; best kept")
    parser.add_argument("--memory-minutes", type=float, default=10.0)
    parser.add_argument("--memory-full", action="store_true", help="full-size model for the memory check")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--encode", action="store_true", help="also time encoding (needs --reference-path)")
    parser.add_argument("--encode-batch", type=int, default=None,
                        help="10.24 s segments per AudioMAE/BiLSTM call in codecfw (default: the recipe's 8 / 16)")
    parser.add_argument("--reference-compat", action="store_true",
                        help="encode with semantic.reference_compat (one fbank over the whole file, the reference's "
                             "token count) instead of codecfw's per-window fbank")
    parser.add_argument("--encode-seconds", type=float, default=10.0,
                        help="audio to encode; above 10.24 s codecfw batches the segments the reference loops over")
    parser.add_argument("--roofline", action="store_true",
                        help="time UNet step, VAE and vocoder apart, count their FLOPs, and bound the speed-up")
    parser.add_argument("--memory-child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        return memory_child(args)
    seconds = args.seconds or (10.24 if args.small else 20.0)
    steps = args.steps or (10 if args.small else 50)
    k = 100 // args.token_rate
    rate, width = 50 / k, 768 * k
    torch.manual_seed(0)
    sem = TableSlot("semantic", torch.randn(4096, width), rate)
    ac = TableSlot("acoustic", torch.randn(8192, width), rate)
    t = int(round(seconds * rate))
    tokens = {"semantic": torch.randint(0, 4096, (1, t)), "acoustic": torch.randint(0, 8192, (1, t))}
    num_samples = int(((t / 8) * 16 * 0.01 * k) * SAMPLE_RATE)  # the reference's trim
    print(f"SemantiCodec decode benchmark: {args.token_rate} tokens/s, {'reduced' if args.small else 'full-size'} "
          f"decoder, {seconds:g} s ({t} tokens a stream), DDIM {steps} steps, guidance 2.0")
    print(f"device cpu, {args.threads} thread(s), torch {torch.__version__}; timings on a shared machine are noisy")

    ref = None
    if args.reference_path:
        main_mod = import_reference(args.reference_path)
        ref = reference_codec(main_mod, args.small, args.token_rate, steps, sem.table, ac.table)
        official = ref.decoder.state_dict()
        dec = codecfw_decoder(args.small, k, steps, sem, ac, official, window_batch_size=args.window_batch_size)
        ref_tokens = torch.stack([tokens["semantic"], tokens["acoustic"]], -1)
    else:
        dec = codecfw_decoder(args.small, k, steps, sem, ac, window_batch_size=args.window_batch_size)
    print(f"codecfw decoder: {sum(p.numel() for p in dec.parameters()) / 1e6:.1f}M parameters, "
          f"{len(dec.window_starts(t))} window(s)")

    ours_fn = lambda: dec.decode_tokens(tokens, sem, ac, num_samples)  # noqa: E731
    ref_fn = None
    if ref is not None:
        devnull = open(os.devnull, "w")
        stdout, stderr = sys.stdout, sys.stderr

        def ref_fn():
            sys.stdout = sys.stderr = devnull  # the reference prints progress bars
            try:
                return ref.decode(ref_tokens)
            finally:
                sys.stdout, sys.stderr = stdout, stderr

    ref_s = None
    with torch.no_grad():
        ref_times, our_times = [], []
        for _ in range(args.repeats):  # alternate, so slow spells of a shared machine hit both
            if ref_fn is not None:
                ref_times.append(timed(ref_fn)[0])
            our_times.append(timed(ours_fn)[0])
        ours_s = min(our_times)
        print()
        if ref_fn is not None:
            ref_s = min(ref_times)
            print(f"reference SemantiCodec.decode   {ref_s:8.1f} s")
        print(f"codecfw decode_tokens           {ours_s:8.1f} s   (real-time factor {seconds / ours_s:.3f})")
        if ref_s is not None:
            print(f"speed-up at equal steps         {ref_s / ours_s:8.2f}x")
        fast_s, _ = timed(lambda: dec.decode_tokens(tokens, sem, ac, num_samples, sampler=args.fast_sampler,
                                                    steps=args.fast_steps), args.repeats)
        print(f"codecfw {args.fast_sampler} {args.fast_steps} steps  {fast_s:8.1f} s"
              + (f"   ({ref_s / fast_s:.2f}x the reference at {steps} steps)" if ref_s else ""))
    if args.roofline:
        roofline(args, dec, len(dec.window_starts(t)), steps, ref_s)
    if args.encode and ref is not None:
        encode_benchmark(args, main_mod, ref, k)
    if not args.skip_memory:
        memory_report(args)


if __name__ == "__main__":
    main()
