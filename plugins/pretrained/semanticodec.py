"""Official SemantiCodec checkpoints (``haoheliu/SemantiCodec`` on the Hugging Face hub) → codecfw checkpoints.

The hub repository holds, per token rate (100, 50, 25 tokens/s ⇔ stack factor K = 1, 2, 4)::

    semanticodec_tokenrate_<rate>/encoder.ckpt     flat state dict: audiomae.model.*, encoder.*,
                                                   encoder_output_linear.weight, quantizer._codebook.*
    semanticodec_tokenrate_<rate>/decoder.ckpt     flat state dict: model.diffusion_model.*, model_ema.*,
                                                   first_stage_model.*, 12 schedule buffers, logvar, scale_factor
    codebook_idx/combine_<512/K>_audioset_dominate/codebook_<N>_0.npy    float32 [2N x 768K] k-means centroids

Conversion keeps the official tensors and renames them: ``audiomae.model.X`` → ``semantic.audiomae.X`` (the MAE
decoder, 26M unused parameters, is dropped), ``encoder.* / encoder_output_linear.* / quantizer.*`` →
``acoustic.*``, each ``.npy`` → ``semantic.codebooks.centroids_<2N>``, and ``decoder.ckpt`` → ``decoder.*`` through
the decoder plugin's :func:`~codecfw.plugins.decoder.official_keys.map_official_decoder_state` (LitEma copies and
the VAE encoder dropped, the stored schedule checked against the recomputed one first). Checkpoints are read with
``torch.load(weights_only=True)``: nothing in them can run code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from codecfw.core.checkpoint import read_state_dict

HUB_REPO = "haoheliu/SemantiCodec"
TOKEN_RATES = {100: 1, 50: 2, 25: 4}
VOCAB_SIZES = (4096, 8192, 16384, 32768)
DEFAULT_VOCAB = 16384
_CODEBOOK_FILE = re.compile(r"codebook_(\d+)_0\.npy$")


def official_files(token_rate: int, vocab_sizes: tuple[int, ...] | list[int] = VOCAB_SIZES) -> list[str]:
    """Paths inside the hub repository for one token rate and some semantic vocabularies."""
    if token_rate not in TOKEN_RATES:
        raise ValueError(f"token_rate must be one of {sorted(TOKEN_RATES)}, got {token_rate}")
    bad = [v for v in vocab_sizes if v % 2 or v < 2]
    if bad:
        raise ValueError(f"semantic vocabulary sizes must be even (official: {VOCAB_SIZES}), got {bad}")
    combine = 512 // TOKEN_RATES[token_rate]
    return [f"semanticodec_tokenrate_{token_rate}/encoder.ckpt", f"semanticodec_tokenrate_{token_rate}/decoder.ckpt",
            *(f"codebook_idx/combine_{combine}_audioset_dominate/codebook_{v // 2}_0.npy" for v in vocab_sizes)]


def local_files(folder: str | Path, token_rate: int, vocab_sizes: list[int]) -> dict[str, Path]:
    """Find the official files in a local copy of the hub repository (or in its ``semanticodec_tokenrate_<rate>``
    folder); FileNotFoundError names the folder and every file still missing."""
    folder = Path(folder)
    found, missing = {}, []
    for name in official_files(token_rate, vocab_sizes):
        rel = Path(name)
        candidates = [folder / rel, folder / rel.name, folder.parent / rel]
        if rel.parts[0] == "codebook_idx":  # the hub repository also has copies of combine_* at its root
            candidates += [folder / Path(*rel.parts[1:]), folder.parent / Path(*rel.parts[1:])]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found[name] = hit
    if missing:
        raise FileNotFoundError(f"{folder}: official SemantiCodec files not found; expected (relative to the folder, "
                                f"as in the hub repository {HUB_REPO}): {', '.join(missing)}")
    return found


def convert_encoder_state(state: dict[str, Tensor], source: str = "encoder.ckpt") -> tuple[dict[str, Tensor], int]:
    """Official ``encoder.ckpt`` → codecfw ``semantic.audiomae.*`` / ``acoustic.*`` keys.
    Returns (state, number of dropped MAE-decoder tensors)."""
    out, dropped, unknown = {}, 0, []
    for key, value in state.items():
        if key.startswith("audiomae.model."):
            rest = key[len("audiomae.model."):]
            if rest.startswith("decoder_") or rest == "mask_token":
                dropped += 1  # the MAE decoder: trained with AudioMAE, never run by SemantiCodec
            else:
                out[f"semantic.audiomae.{rest}"] = value
        elif key.startswith(("encoder.", "encoder_output_linear.")):
            out[f"acoustic.{key}"] = value
        elif key.startswith("quantizer._codebook."):
            if key.endswith(".initted"):  # vector-quantize-pytorch <= 1.14 stored Tensor([1.]) of shape [1]
                value = value.reshape(()).bool()
            out[f"acoustic.{key}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{source}: {len(unknown)} unexpected key(s) for a SemantiCodec encoder, e.g. {unknown[:5]}")
    for required in ("semantic.audiomae.patch_embed.proj.weight", "acoustic.encoder_output_linear.weight",
                     "acoustic.quantizer._codebook.embed", "acoustic.encoder.weight_ih_l0"):
        if required not in out:
            raise KeyError(f"{source}: missing {required.split('.', 1)[1]!r} (official key "
                           f"{required.replace('semantic.audiomae.', 'audiomae.model.').replace('acoustic.', '')!r})")
    return out, dropped


def encoder_recipe(state: dict[str, Tensor], stack_factor: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``semantic`` and ``acoustic`` recipe sections a converted encoder state implies (sizes read from the
    weights; AudioMAE's head count cannot be, official: 12)."""
    embed_dim = state["semantic.audiomae.cls_token"].shape[-1]
    depth = len({k.split(".")[3] for k in state if k.startswith("semantic.audiomae.blocks.")})
    feature_dim, wide = state["acoustic.encoder_output_linear.weight"].shape
    if feature_dim != embed_dim * stack_factor:
        raise ValueError(f"encoder: encoder_output_linear is [{feature_dim} x {wide}] but AudioMAE width "
                         f"{embed_dim} x K={stack_factor} = {embed_dim * stack_factor}; wrong token rate?")
    layers = len({k.split("_l")[-1].split("_")[0] for k in state if k.startswith("acoustic.encoder.weight_ih_l")})
    semantic = {"kind": "audiomae_kmeans", "stack_factor": stack_factor, "embed_dim": embed_dim, "depth": depth,
                "contextual_depth": max(0, depth - 4)}
    acoustic = {"kind": "bilstm_ema_vq", "lstm_layers": layers, "bidirectional": wide == 4 * feature_dim,
                "codebook_size": state["acoustic.quantizer._codebook.embed"].shape[-2]}
    return semantic, acoustic


def convert_semanticodec(encoder_state: dict[str, Tensor], decoder_state: dict[str, Tensor],
                         codebooks: dict[int, Tensor], stack_factor: int, vocab_size: int | None = None,
                         keep_vae_encoder: bool = False, overrides: dict[str, dict[str, Any]] | None = None,
                         name: str | None = None, sources: dict[str, str] | None = None):
    """Official state dicts and centroid tables → :class:`codecfw.core.pretrained.Converted`.

    codebooks : {vocabulary size: Tensor[size x F]}
    overrides : recipe values per section (``semantic`` / ``acoustic`` / ``decoder``) for non-official sizes.
    """
    from codecfw.core.pretrained import Converted
    from codecfw.plugins.decoder.diffusion_schedule import reference_schedule_buffers
    from codecfw.plugins.decoder.latent_diffusion import LatentDiffusionDecoderConfig
    from codecfw.plugins.decoder.official_keys import check_official_schedule, map_official_decoder_state

    sources = sources or {}
    overrides = overrides or {}
    state, dropped_mae = convert_encoder_state(encoder_state, sources.get("encoder", "encoder.ckpt"))
    semantic, acoustic = encoder_recipe(state, stack_factor)
    if not codebooks:
        raise ValueError("at least one semantic codebook (.npy) is required")
    width = semantic["embed_dim"] * stack_factor
    for size, table in sorted(codebooks.items()):
        if tuple(table.shape) != (size, width):
            raise ValueError(f"{sources.get(size, f'codebook {size}')}: centroid table has shape "
                             f"{tuple(table.shape)}, expected [{size} x {width}] for K={stack_factor}")
        state[f"semantic.codebooks.centroids_{size}"] = table.float().contiguous()
    sizes = sorted(codebooks)
    semantic.update(codebooks=[{"size": s} for s in sizes], vocab_size=vocab_size or
                    (DEFAULT_VOCAB if DEFAULT_VOCAB in sizes else sizes[-1]))
    semantic.update(overrides.get("semantic", {}))
    acoustic.update(overrides.get("acoustic", {}))

    decoder = {"kind": "latent_diffusion", "vae_encoder": keep_vae_encoder, **overrides.get("decoder", {})}
    dcfg = LatentDiffusionDecoderConfig(**decoder)
    dsource = sources.get("decoder", "decoder.ckpt")
    if dcfg.noise_schedule == "scaled_linear":
        check_official_schedule(decoder_state, reference_schedule_buffers(
            dcfg.num_train_timesteps, dcfg.beta_start, dcfg.beta_end), source=dsource)
    mapped = map_official_decoder_state(
        decoder_state, channel_mult=dcfg.channel_mult, num_res_blocks=dcfg.num_res_blocks,
        attention_resolutions=dcfg.attention_resolutions, extra_self_attention=dcfg.extra_self_attention,
        vae_levels=len(dcfg.vae_channel_mult), vae_num_res_blocks=dcfg.vae_num_res_blocks,
        keep_vae_encoder=keep_vae_encoder, source=dsource)
    state.update({f"decoder.{k}": v for k, v in mapped.items()})
    state["decoder.scale_initialized"] = torch.tensor(True)  # the official scale_factor is final
    vae_encoder = ("first_stage_model.encoder.", "first_stage_model.quant_conv.")
    dropped = {"audiomae_decoder": dropped_mae,
               "model_ema": sum(k.startswith("model_ema.") for k in decoder_state),
               "vae_encoder": 0 if keep_vae_encoder else sum(k.startswith(vae_encoder) for k in decoder_state)}
    tps = 100 // stack_factor
    recipe = {"name": name or f"semanticodec-{tps}tps", "sample_rate": 16000,
              "description": f"SemantiCodec {tps} tokens/s, converted from the official {HUB_REPO} checkpoints",
              "semantic": semantic, "acoustic": acoustic, "decoder": decoder}
    meta = {"converted_from": {"repository": HUB_REPO, **{str(k): v for k, v in sources.items()}},
            "dropped_tensors": dropped, "schedule_checked": dcfg.noise_schedule == "scaled_linear"}
    return Converted(recipe=recipe, state_dict=state, metadata=meta)


def codebook_files(files: dict[str, Path]) -> dict[int, Path]:
    """``{vocabulary size: path}`` of the ``codebook_<N>_0.npy`` entries of ``files``: such a file holds 2N
    centroids (vocabulary 4096 ⇔ ``codebook_2048_0.npy``)."""
    return {2 * int(m.group(1)): Path(p) for n, p in files.items() if (m := _CODEBOOK_FILE.search(str(n)))}


def load_codebooks(paths: dict[int, Path]) -> dict[int, Tensor]:
    from codecfw.core.clustering.codebook import load_centroids

    out = {}
    for size, path in paths.items():
        out[size] = load_centroids(path)
        if out[size].shape[0] != size:
            raise ValueError(f"{path}: {out[size].shape[0]} centroids, expected {size} (twice the number in "
                             f"the file name)")
    return out


def convert_official_semanticodec(spec, files: dict[str, Path]):
    """Converter of the pretrained names ``semanticodec-<rate>tps.<vocab>`` (see ``codecfw.core.pretrained``)."""
    options = spec.options
    stack_factor = int(options.get("stack_factor") or TOKEN_RATES[int(options["token_rate"])])
    encoder = next(p for n, p in files.items() if str(n).endswith("encoder.ckpt"))
    decoder = next(p for n, p in files.items() if str(n).endswith("decoder.ckpt"))
    paths = codebook_files(files)
    codebooks = load_codebooks(paths)
    sources = {"encoder": str(encoder), "decoder": str(decoder), **{size: str(p) for size, p in paths.items()}}
    return convert_semanticodec(read_state_dict(encoder), read_state_dict(decoder), codebooks, stack_factor,
                                vocab_size=options.get("semantic_vocab_size"),
                                keep_vae_encoder=bool(options.get("keep_vae_encoder", False)),
                                overrides=options.get("overrides"), name=getattr(spec, "kind", None),
                                sources=sources)


def import_semanticodec(output: str | Path, source: str | Path | None = None, token_rate: int = 100,
                        vocab_size: int = DEFAULT_VOCAB, vocab_sizes: list[int] | None = None,
                        revision: str | None = None, keep_vae_encoder: bool = False,
                        overrides: dict[str, dict[str, Any]] | None = None, registry=None) -> Path:
    """``codecfw import semanticodec``: find the official files (a local copy of the hub repository, or the hub
    through huggingface_hub, offline from its cache), convert them and write a checkpoint folder at ``output``.

    vocab_sizes : semantic codebooks to include (default: ``[vocab_size]``); ``vocab_size`` is the one used for
    encoding unless the recipe is overridden (``semantic.vocab_size``). ``overrides``: recipe values per section
    for checkpoints of non-official sizes.
    """
    from codecfw.core.pretrained import fetch_files, pretrained_spec, save_converted
    from codecfw.core.registry import get_registry

    sizes = sorted(set(vocab_sizes or []) | {vocab_size})
    source = str(source or HUB_REPO)
    local = Path(source).is_dir()
    if not local and (source.count("/") != 1 or source.startswith((".", "/", "~"))):
        raise FileNotFoundError(f"source {source!r} is neither an existing folder nor a hub repository id "
                                f"(owner/name, e.g. {HUB_REPO})")
    tag = "" if sizes == [vocab_size] else "-multivocab"
    name = f"semanticodec-{token_rate}tps.{vocab_size // 1024 or vocab_size}{'k' * (vocab_size >= 1024)}{tag}"
    spec = pretrained_spec(name, repo_id=HUB_REPO if local else source, files=official_files(token_rate, sizes),
                           revision=revision,
                           options={"token_rate": token_rate, "stack_factor": TOKEN_RATES[token_rate],
                                    "semantic_vocab_size": vocab_size, "keep_vae_encoder": keep_vae_encoder,
                                    "overrides": overrides or {}})()
    files = local_files(source, token_rate, sizes) if local else fetch_files(spec)
    return save_converted(Path(output), spec, convert_official_semanticodec(spec, files), registry or get_registry())
