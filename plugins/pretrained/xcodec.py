"""Convert published X-Codec checkpoints into codecfw checkpoints (safetensors weights + JSON recipe).

Two source layouts:

- the original repository's ``SoundStream.state_dict()`` (``ZhenYe234/xcodec`` ``*.pth``): ``encoder.block.*``,
  ``decoder_2.model.*`` with ``weight_g``/``weight_v``, ``encoder_semantic.*``/``decoder_semantic.*`` with an extra
  ``.conv`` level, ``fc_prior``/``fc_post1``/``fc_post2``, ``quantizer.vq.layers.N._codebook.*``, ``semantic_model.*``.
  Read with ``torch.load(weights_only=True)``; the architecture comes from the reference's ``config.yaml``
  (``generator.config``) when given, else from the tensor shapes plus a teacher named on the command line.
- the transformers port (``hf-audio/xcodec-*``, ``XcodecModel.save_pretrained``): ``config.json`` + safetensors with
  fused conv weights (weight norm removed); the codecfw recipe is derived from ``XcodecConfig``.

The output is a codecfw checkpoint folder (``model.safetensors`` with the composed codec's state dict, teacher
included, + ``meta.json`` with the resolved recipe), loadable with ``codecfw.load``. The teacher
is rebuilt from ``semantic.teacher_config`` so the checkpoint loads without any download.

Entry points: :func:`convert_xcodec` (``codecfw import xcodec SRC -o DST``) and :func:`convert_official` (the
``xcodec-*`` pretrained names of ``codecfw.core.pretrained``).
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: original ``semantic_techer`` names → hub ids (``models/soundstream_semantic.py``)
REFERENCE_TEACHERS = {
    "hubert_base": "facebook/hubert-base-ls960",
    "wavlm_base_plus": "microsoft/wavlm-base-plus",
    "hubert_base_general": "ZhenYe234/hubert_base_general_audio",
}
_WN_SUFFIX = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_CODEBOOK = re.compile(r"^(?:quantizer\.vq\.layers|quantizer\.quantizers)\.(\d+)\.(?:_codebook|codebook)\.(\w+)$")
_SEM_WRAPPER = re.compile(r"(^|\.)(conv|conv1|conv2)\.(?:conv|deconv)\.")
_RES_UNIT = {"snake1": 0, "conv1": 1, "snake2": 2, "conv2": 3}


class ConversionError(ValueError):
    """The source does not look like an X-Codec checkpoint of the expected layout."""


# --------------------------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------------------------


def _codebook_tensor(name: str, value: Tensor) -> tuple[str, Tensor]:
    """X-Codec's ``EuclideanCodebook`` buffers → vector-quantize-pytorch ``Codebook`` buffers (one head)."""
    if name == "inited":
        return "initted", value.reshape(-1)[0] != 0
    if name in ("cluster_size", "embed", "embed_avg"):
        return name, value.unsqueeze(0)
    raise ConversionError(f"unknown codebook buffer {name!r}")


def _split_weight_norm(key: str, value: Tensor) -> dict[str, Tensor]:
    """A fused conv weight → weight-norm ``g`` (norm over all dims but 0) and ``v`` (the weight itself)."""
    g = value.flatten(1).norm(dim=1).reshape(-1, *([1] * (value.dim() - 1)))
    base = key[: -len("weight")]
    return {base + _WN_SUFFIX["weight_g"]: g, base + _WN_SUFFIX["weight_v"]: value}


def _map_common(key: str, value: Tensor, heads: dict[str, str], out: dict[str, Tensor]) -> bool:
    """The keys both published layouts name alike (teacher, codebooks) or only rename (the three linear heads,
    named by ``heads``). Returns False for a key it does not know."""
    head = key.split(".", 1)[0]
    if key.startswith("semantic_model."):
        out["semantic.teacher." + key[len("semantic_model."):]] = value
    elif head in heads:
        out[heads[head] + key.split(".", 1)[1]] = value
    elif m := _CODEBOOK.match(key):
        name, tensor = _codebook_tensor(m.group(2), value)
        out[f"acoustic.quantizer.layers.{m.group(1)}._codebook.{name}"] = tensor
    else:
        return False
    return True


def _check_known(unknown: list[str], layout: str) -> None:
    if unknown:
        raise ConversionError(f"keys outside the {layout} layout: {', '.join(unknown[:8])}"
                              f"{' ...' if len(unknown) > 8 else ''}")


_ORIGINAL_HEADS = {"fc_prior": "acoustic.fusion.", "fc_post1": "decoder.semantic_proj.",
                   "fc_post2": "decoder.acoustic_proj."}
_ORIGINAL_NAMES = {codecfw: original for original, codecfw in _ORIGINAL_HEADS.items()}
_TRANSFORMERS_HEADS = {"fc": "acoustic.fusion.", "fc1": "decoder.semantic_proj.", "fc2": "decoder.acoustic_proj."}


def original_to_codecfw(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a reference ``SoundStream`` state dict to the codecfw X-Codec layout."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(("encoder.", "decoder_2.")):
            prefix = "acoustic.encoder." if key.startswith("encoder.") else "decoder.generator."
            rest = key.split(".", 1)[1]
            leaf = rest.rsplit(".", 1)[-1]
            if leaf in _WN_SUFFIX:
                rest = rest[: -len(leaf)] + _WN_SUFFIX[leaf]
            out[prefix + rest] = value
        elif key.startswith(("encoder_semantic.", "decoder_semantic.")):
            prefix = "semantic.encoder." if key.startswith("encoder_") else "decoder.semantic_head."
            out[prefix + _SEM_WRAPPER.sub(r"\1\2.", key.split(".", 1)[1])] = value
        elif not _map_common(key, value, _ORIGINAL_HEADS, out):
            unknown.append(key)
    _check_known(unknown, "X-Codec")
    return out


def _dac_index(hf_rest: str, num_blocks: int, num_units: int, decoder: bool) -> str:
    """``conv1``/``block.i.res_unitJ.conv1``/... (transformers DAC names) → DAC's ``nn.Sequential`` indices."""
    parts = hf_rest.split(".")
    if parts[0] in ("conv1", "snake1", "conv2") and (len(parts) == 2 or parts[1] == "parametrizations"):
        top = {"conv1": 0, "snake1": num_blocks + 1, "conv2": num_blocks + 2}[parts[0]]
        return ".".join([str(top), *parts[1:]])
    if parts[0] != "block":
        raise ConversionError(f"unexpected DAC key {hf_rest!r}")
    block, name, tail = int(parts[1]) + 1, parts[2], parts[3:]
    if name.startswith("res_unit"):
        unit = int(name[len("res_unit"):]) - 1 + (2 if decoder else 0)
        return ".".join([str(block), "block", str(unit), "block", str(_RES_UNIT[tail[0]]), *tail[1:]])
    inner = {"snake1": 0, "conv_t1": 1} if decoder else {"snake1": num_units, "conv1": num_units + 1}
    return ".".join([str(block), "block", str(inner[name]), *tail])


def transformers_to_codecfw(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a ``transformers.XcodecModel`` state dict to the codecfw X-Codec layout (fused conv weights are split
    back into weight-norm ``g``/``v`` so ``g·v/‖v‖`` reproduces them)."""
    out: dict[str, Tensor] = {}
    unknown = []
    sizes = {}
    for side in ("acoustic_encoder", "acoustic_decoder"):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"{side}\.block\.(\d+)\.", k))}
        units = {int(m.group(1)) for k in state if (m := re.match(rf"{side}\.block\.\d+\.res_unit(\d+)\.", k))}
        sizes[side] = (len(blocks), len(units))
    for key, value in state.items():
        if key.startswith(("acoustic_encoder.", "acoustic_decoder.")):
            side, rest = key.split(".", 1)
            decoder = side == "acoustic_decoder"
            mapped = ("decoder.generator.model." if decoder else "acoustic.encoder.block.") + \
                _dac_index(rest, *sizes[side], decoder=decoder)
            if mapped.endswith(".weight") and not mapped.endswith("alpha"):
                out.update(_split_weight_norm(mapped, value))
            else:
                out[mapped] = value
        elif key.startswith("encoder_semantic."):
            out["semantic.encoder." + key.split(".", 1)[1]] = value
        elif key.startswith("decoder_semantic."):
            out["decoder.semantic_head." + key.split(".", 1)[1]] = value
        elif not _map_common(key, value, _TRANSFORMERS_HEADS, out):
            unknown.append(key)
    _check_known(unknown, "transformers XcodecModel")
    return out


def codecfw_to_original(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`original_to_codecfw` (reference layout, e.g. for running the original code)."""
    out: dict[str, Tensor] = {}
    wn = {v: k for k, v in _WN_SUFFIX.items()}

    def unwrap(rest: str) -> str:
        if re.search(r"res_units\.\d+\.conv2\.", rest):  # Conv1d1x1 has no wrapper in the reference
            return rest
        return re.sub(r"(^|\.)(conv|conv1|conv2)\.(weight|bias)$", r"\1\2.conv.\3", rest)

    for key, value in state.items():
        for ours, theirs in (("acoustic.encoder.", "encoder."), ("decoder.generator.", "decoder_2.")):
            if key.startswith(ours):
                rest = key[len(ours):]
                for suffix, leaf in wn.items():
                    if rest.endswith(suffix):
                        rest = rest[: -len(suffix)] + leaf
                out[theirs + rest] = value
                break
        else:
            if key.startswith("semantic.encoder."):
                out["encoder_semantic." + unwrap(key[len("semantic.encoder."):])] = value
            elif key.startswith("decoder.semantic_head."):
                out["decoder_semantic." + unwrap(key[len("decoder.semantic_head."):])] = value
            elif key.startswith("semantic.teacher."):
                out["semantic_model." + key[len("semantic.teacher."):]] = value
            elif (head := key.rsplit(".", 1)[0] + ".") in _ORIGINAL_NAMES:
                out[_ORIGINAL_NAMES[head] + "." + key.rsplit(".", 1)[1]] = value
            elif m := re.match(r"^acoustic\.quantizer\.layers\.(\d+)\._codebook\.(\w+)$", key):
                name = m.group(2)
                prefix = f"quantizer.vq.layers.{m.group(1)}._codebook."
                if name == "initted":
                    out[prefix + "inited"] = value.reshape(1).float()
                else:
                    out[prefix + name] = value.squeeze(0)
            else:
                raise ConversionError(f"no reference name for {key!r}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------

_TEACHER_CONFIG_DROP = {"architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
                        "_commit_hash", "_attn_implementation_autoset", "output_hidden_states", "return_dict"}


def _teacher_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _TEACHER_CONFIG_DROP}


def recipe_from_transformers(config: dict[str, Any], name: str = "xcodec") -> dict[str, Any]:
    """A codecfw recipe for a ``transformers.XcodecConfig`` (as in a port's config.json)."""
    acoustic, teacher = config.get("acoustic_model_config") or {}, config.get("semantic_model_config") or {}
    defaults = {"encoder_hidden_size": 64, "downsampling_ratios": [8, 5, 4, 2], "decoder_hidden_size": 1024,
                "upsampling_ratios": [8, 5, 4, 2], "hidden_size": 256}
    acoustic = {**defaults, **acoustic}
    if "model_type" not in teacher:
        raise ConversionError("config.json: semantic_model_config lacks model_type (hubert, wavlm, ...)")
    codebook = int(config.get("codebook_size", 1024))
    conv = {key: config.get(key, default) for key, default in (
        ("channel_ratios", [1, 1]), ("strides", [1, 1]), ("kernel_size", 3), ("block_dilations", [1, 1]),
        ("unit_kernel_size", 3))}
    return {
        "name": name,
        "description": "converted from a transformers XcodecModel",
        "sample_rate": int(config.get("sample_rate", 16000)),
        "semantic": {"kind": "ssl_teacher", "model": teacher.get("_name_or_path") or f"<{teacher['model_type']}>",
                     "teacher_config": _teacher_config(teacher), "layers": "mean", "encoder": conv},
        "acoustic": {"kind": "dac_rvq", "encoder_channels": int(acoustic["encoder_hidden_size"]),
                     "strides": list(acoustic["downsampling_ratios"]), "latent_dim": int(acoustic["hidden_size"]),
                     "codebook_size": codebook, "bandwidths": [float(b) for b in config.get(
                         "target_bandwidths", [0.5, 1, 1.5, 2, 4])],
                     # transformers: num_quantizers = 1000·bw_max // (frame_rate · ceil(log2 K))
                     "bits_per_codebook": float(math.ceil(math.log2(codebook)))},
        "decoder": {"kind": "dac_generator", "channels": int(acoustic["decoder_hidden_size"]),
                    "rates": list(acoustic["upsampling_ratios"]), "semantic_head": dict(conv)},
    }


def recipe_from_original(state: dict[str, Tensor], teacher_config: dict[str, Any], teacher: str,
                         generator: dict[str, Any] | None = None, gain: float | None = None,
                         name: str = "xcodec") -> dict[str, Any]:
    """A codecfw recipe for a reference ``SoundStream`` state dict. ``generator`` is the reference config's
    ``generator.config`` (D, ratios, bins, target_bandwidths, sample_rate); missing values come from the shapes."""
    generator = dict(generator or {})
    try:
        latent = int(state["fc_post2.weight"].shape[0])
        bins = int(state["quantizer.vq.layers.0._codebook.embed"].shape[0])
        # 64 and 1024 are hard-coded in the reference; read them anyway so smaller test models convert too
        encoder_channels = int(state["encoder.block.0.weight_v"].shape[0])
        decoder_channels = int(state["decoder_2.model.0.weight_v"].shape[0])
    except KeyError as exc:
        raise ConversionError(f"not an X-Codec SoundStream state dict: no {exc.args[0]!r}") from None
    strides = []
    for i in range(1, 64):
        convs = [k for k in state if re.match(rf"^encoder\.block\.{i}\.block\.\d+\.weight_v$", k)]
        if not convs:
            break
        strides.append(int(state[max(convs)].shape[-1]) // 2)
    n_q = len({m.group(1) for k in state if (m := _CODEBOOK.match(k))})
    ratios = list(generator.get("ratios", strides))
    sr = int(generator.get("sample_rate", 16000))
    bandwidths = [float(b) for b in generator.get("target_bandwidths", [0.5, 1, 1.5, 2, 4])]
    if int(generator.get("D", latent)) != latent or (strides and ratios != strides):
        raise ConversionError(f"config.yaml (D={generator.get('D')}, ratios={generator.get('ratios')}) disagrees "
                              f"with the weights (D={latent}, strides={strides})")
    # the reference hard-codes 10 bits a token in n_q = 1000·bw_max // (ceil(sr/hop)·10)
    expected = int(1000 * max(bandwidths) // (math.ceil(sr / math.prod(ratios)) * 10))
    if expected != n_q:
        raise ConversionError(f"{n_q} quantizer layers in the weights, but bandwidths {bandwidths} at "
                              f"{sr} Hz imply {expected}")
    recipe = {
        "name": name,
        "description": "converted from the X-Codec reference (zhenye234/xcodec)",
        "sample_rate": sr,
        "semantic": {"kind": "ssl_teacher", "model": teacher, "teacher_config": _teacher_config(teacher_config),
                     "layers": "mean"},
        "acoustic": {"kind": "dac_rvq", "encoder_channels": encoder_channels, "strides": ratios,
                     "latent_dim": latent, "codebook_size": bins, "bandwidths": bandwidths, "bits_per_codebook": 10.0},
        "decoder": {"kind": "dac_generator", "channels": decoder_channels, "rates": ratios},
    }
    if gain is not None:
        recipe["data"] = {"gain": float(gain)}
    return recipe


# --------------------------------------------------------------------------------------------------------------
# Sources and output
# --------------------------------------------------------------------------------------------------------------


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_original_state(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a reference ``.pth`` (a bare ``SoundStream.state_dict()`` or a training checkpoint with
    ``codec_model``), unpickled with ``weights_only=True``. ``io.BytesIO`` entries, which some published files
    carry, are allowed by the unpickler and dropped."""
    import pickle

    try:
        with torch.serialization.safe_globals([io.BytesIO]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConversionError(f"{path}: refusing to unpickle it with arbitrary objects (weights_only=True failed: "
                              f"{str(exc).splitlines()[0]})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("codec_model"), dict):
        obj = obj["codec_model"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}


def _read_reference_config(path: str | Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data.get("generator"), dict) or not isinstance(data["generator"].get("config"), dict):
        raise ConversionError(f"{path}: expected the reference's config.yaml with generator.config")
    return data


def _teacher_config_from(teacher: str) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(teacher, local_files_only=_offline()).to_dict()
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read the teacher config of {teacher!r} ({str(exc).splitlines()[0]}); pass "
                              f"--teacher-config with its config.json or a local directory as --teacher") from exc


def _load_transformers_source(src: str) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    path = Path(src).expanduser()
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(src, allow_patterns=["*.json", "*.safetensors"],
                                          local_files_only=_offline()))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many classes; all mean "not available"
            raise ConversionError(f"{src}: not a file or directory, and the hub snapshot is not available "
                                  f"({type(exc).__name__}); download it where there is network "
                                  f"(`huggingface-cli download {src}`) and pass the directory") from exc
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{path}: no config.json (expected a transformers XcodecModel directory)")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "xcodec":
        raise ConversionError(f"{config_file}: model_type is {config.get('model_type')!r}, expected 'xcodec'")
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{path}: no *.safetensors weights")
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return config, state, str(path)


def convert_xcodec_weights(src: str | Path, *, config: str | Path | None = None, teacher: str | None = None,
                           teacher_config: dict[str, Any] | str | Path | None = None, name: str | None = None,
                           gain: float | None = None):
    """An X-Codec checkpoint → :class:`codecfw.core.pretrained.Converted` (recipe + codecfw state dict).

    src
        a reference ``.pth`` (``ZhenYe234/xcodec``), or a transformers port: directory or hub id
        (``hf-audio/xcodec-hubert-librispeech``).
    config
        the reference's ``config.yaml`` for a ``.pth`` (default: ``config.yaml`` beside it, when present).
    teacher, teacher_config
        for a ``.pth``: the teacher's hub id or directory (its ``config.json`` is read), or its config as a dict or
        JSON file; default: the config's ``semantic_techer``.
    gain
        ``data.gain`` of the recipe (default: the config's ``audio_norm_scale``, else 0.95 as in the reference).
    """
    from codecfw.core.pretrained import Converted

    src_path = Path(src).expanduser()
    stem = name or (src_path.stem if src_path.is_file() else src_path.name or "xcodec")
    if src_path.is_file():
        state = load_original_state(src_path)
        cfg_path = Path(config) if config else src_path.with_name("config.yaml")
        reference = _read_reference_config(cfg_path) if (config or cfg_path.is_file()) else {}
        generator = (reference.get("generator") or {}).get("config", {})
        teacher = teacher or REFERENCE_TEACHERS.get(generator.get("semantic_techer", ""), None)
        if isinstance(teacher_config, (str, Path)):
            teacher_config = json.loads(Path(teacher_config).read_text())
        if teacher_config is None:
            if teacher is None:
                raise ConversionError(f"{src}: name the teacher (--teacher hub id or directory, or --teacher-config); "
                                      f"no config.yaml with semantic_techer was found")
            teacher_config = _teacher_config_from(teacher)
        gain = gain if gain is not None else float(reference.get("audio_norm_scale", 0.95))
        recipe = recipe_from_original(state, teacher_config, teacher or "<teacher>", generator, gain, stem)
        return Converted(recipe, original_to_codecfw(state), {"source": {"layout": "xcodec-original",
                                                                          "path": str(src_path)}})
    hf_config, state, where = _load_transformers_source(str(src))
    recipe = recipe_from_transformers(hf_config, stem)
    recipe["data"] = {"gain": 0.95 if gain is None else float(gain)}
    return Converted(recipe, transformers_to_codecfw(state), {"source": {"layout": "transformers", "path": where}})


def check_fits(converted, registry=None) -> None:
    """Build the recipe's codec (teacher from its config: no download) and check keys and shapes, naming any
    mismatch; raises :class:`ConversionError`."""
    from codecfw.core.codec import build_codec
    from codecfw.core.config import validate_recipe

    with torch.device("meta"):
        codec = build_codec(validate_recipe(converted.recipe, registry, "converted recipe"), registry)
    expected = codec.state_dict()
    got = converted.state_dict
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [f"{k}: {tuple(got[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
             if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ConversionError(f"the converted weights do not fit the recipe's codec: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")


def save_converted_checkpoint(dst: str | Path, converted, registry=None) -> Path:
    """Write ``converted`` as a codecfw checkpoint folder (``model.safetensors`` + ``meta.json``), atomically."""
    from codecfw.core.checkpoint import save_codec_folder
    from codecfw.core.config import validate_recipe
    from codecfw.core.registry import get_registry

    registry = registry or get_registry()
    recipe = validate_recipe(converted.recipe, registry, "converted recipe")
    return save_codec_folder(dst, converted.state_dict, recipe, registry, **converted.metadata)


def convert_xcodec(src: str | Path, dst: str | Path, *, verify: bool = True, registry=None, **options: Any) -> Path:
    """Convert an X-Codec checkpoint (see :func:`convert_xcodec_weights` for ``options``) into the codecfw
    checkpoint folder ``dst``; with ``verify`` the weights are first checked against the recipe's codec."""
    converted = convert_xcodec_weights(src, **options)
    if verify:
        check_fits(converted, registry)
    return save_converted_checkpoint(dst, converted, registry)


def convert_official(spec, files: dict[str, Path]):
    """Converter of the ``xcodec-*`` pretrained names (``codecfw.core.pretrained``): ``files`` holds the ``.pth`` and
    the reference ``config.yaml``; ``spec.options["teacher"]`` names the teacher whose config.json is read."""
    weights = next((p for f, p in files.items() if f.endswith(".pth")), None)
    config = next((p for f, p in files.items() if f.endswith((".yaml", ".yml"))), None)
    if weights is None:
        raise ConversionError(f"pretrained {spec.kind!r}: no .pth among {sorted(files)}")
    return convert_xcodec_weights(weights, config=config, teacher=spec.options.get("teacher"), name=spec.kind)
