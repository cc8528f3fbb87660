"""The Python API: ``codecfw.load(name_or_path)`` → an :class:`AudioTokenizer` that turns audio into tokens and back.

::

    import codecfw
    tok = codecfw.load("runs/xcodec-1a2b3c/checkpoints/step-00100000")   # or a pretrained name
    files = tok.encode(waveforms, sample_rate=44100)                      # list[TokenFile], one per item
    audio = tok.decode(files)                                              # list[Tensor[1 x N]] at tok.sample_rate

Inputs are explicit about shape: ``Tensor[N]`` is one mono recording, ``Tensor[B x N]`` a batch of mono
recordings, ``Tensor[B x C x N]`` a batch with channels, and a list holds recordings of different lengths
(``Tensor[N]`` or ``Tensor[C x N]`` each). Channels are mixed down by ``mixdown`` (``"mean"``, ``"first"`` or
``"error"``); a rate other than the codec's is resampled (torchaudio sinc) unless ``resample=False``, which raises.
Recordings longer than the codec's chunk window are processed in windows (see :mod:`codecfw.core.tokenizer.chunking`).
"""

from __future__ import annotations

import os
from importlib import metadata as md
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import CheckpointError, is_alias, load_checkpoint, resolve_checkpoint_dir  # noqa: F401 - this API
from ..codec import Codec, build_codec
from ..config import RecipeBase
from ..data.audio import AudioError, Mixdown, resample, to_mono
from ..data.stream import AudioSink, AudioSource
from ..registry import Registry, get_registry
from .chunking import ChunkPolicy, decode_stream, encode_stream, resolve_chunk_policy
from .tokens import TokenFile


def _codecfw_version() -> str:
    try:
        return md.version("codecfw")
    except md.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def load(name_or_path: str | os.PathLike, *, device: str | torch.device | None = None,
         registry: Registry | None = None, chunk_seconds: float | None = None, prefer_ema: bool = True,
         cache_dir: str | os.PathLike | None = None) -> "AudioTokenizer":
    """Load a codec from a checkpoint folder / run directory, or from a registered pretrained name
    (``codecfw plugins`` lists them under ``pretrained``; downloads through huggingface_hub when online)."""
    registry = registry or get_registry()
    path = Path(name_or_path)
    if path.exists() or is_alias(path):
        codec, recipe, meta = load_checkpoint(path, registry, prefer_ema)
        codec_id = recipe.name
        info = {"checkpoint": str(resolve_checkpoint_dir(path)), "step": meta.get("step")}
    else:
        from ..pretrained import load_pretrained, pretrained_names

        name = str(name_or_path)
        if name not in pretrained_names(registry):
            known = ", ".join(pretrained_names(registry)) or "none registered"
            raise ValueError(f"{name!r} is neither a checkpoint folder nor a registered pretrained name; "
                             f"known pretrained names: {known}")
        codec, recipe, meta = load_pretrained(name, registry=registry, cache_dir=cache_dir)
        codec_id = name
        info = {"pretrained": name}
    tokenizer = AudioTokenizer(codec, codec_id=codec_id, config_hash=recipe.config_hash(), recipe=recipe,
                               chunk_seconds=chunk_seconds, info=info)
    return tokenizer.to(device) if device is not None else tokenizer


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------------------


class AudioTokenizer:
    """A loaded codec with batched, chunked, file-aware ``encode`` and ``decode``.

    codec : Codec
        The composed codec (kept in eval mode).
    codec_id, config_hash : str
        Written into every :class:`TokenFile`; decoding refuses tokens whose config hash differs.
    chunk_seconds : float | None
        Override the window of the codec's chunk policy.
    """

    def __init__(self, codec: Codec, *, codec_id: str, config_hash: str, recipe: RecipeBase | None = None,
                 chunk_seconds: float | None = None, info: dict[str, Any] | None = None) -> None:
        self.codec = codec.eval()
        self.codec_id = codec_id
        self.config_hash = config_hash
        self.recipe = recipe
        self.info = dict(info or {})
        self.policy: ChunkPolicy = resolve_chunk_policy(codec, chunk_seconds)
        self.device = next((p.device for p in codec.parameters()), torch.device("cpu"))

    @classmethod
    def from_recipe(cls, recipe: RecipeBase, registry: Registry | None = None, **kwargs: Any) -> "AudioTokenizer":
        """An untrained codec built from a recipe (tests, smoke checks)."""
        return cls(build_codec(recipe, registry), codec_id=recipe.name, config_hash=recipe.config_hash(),
                   recipe=recipe, **kwargs)

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    @property
    def streams(self):
        return self.codec.streams()

    def set_chunk_seconds(self, seconds: float | None) -> None:
        """Override the window of the codec's chunk policy (``None``: the codec's own)."""
        self.policy = resolve_chunk_policy(self.codec, seconds)

    def processed_whole(self, num_samples: int, chunked: bool = True) -> bool:
        """The one short-against-long decision of every encode and decode path: a recording of ``num_samples``
        (at the codec's rate) goes through the codec in one pass, batched with others of its length, when it fits
        one window of the chunk policy or when chunking is off (``chunked=False``) or impossible
        (``policy.chunkable`` false); otherwise window by window."""
        return not (chunked and self.policy.chunkable) or num_samples <= self.policy.window

    def to(self, device: str | torch.device) -> "AudioTokenizer":
        self.device = torch.device(device)
        self.codec.to(self.device)
        return self

    def __repr__(self) -> str:
        streams = ", ".join(f"{s.name}[{s.codebook_size}@{s.frame_rate:g}/s]" for s in self.streams)
        return (f"AudioTokenizer({self.codec_id!r}, config {self.config_hash}, {self.sample_rate} Hz, {streams}, "
                f"{self.codec.bitrate / 1000:g} kbps)")

    # -- the codec on one batch ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _encode_batch(self, wave: Tensor) -> dict[str, Tensor]:
        """wave : Tensor[B x 1 x N] → {stream: LongTensor[B x T]}. A recording shorter than one frame of the slowest
        stream (a 6 ms click) is zero-padded to it, so convolutions whose kernels outgrow it still run, and its
        tokens cut to the count the codec gives a short input (one a stream at least, as for any input)."""
        n = wave.shape[-1]
        min_samples = max(round(self.sample_rate / s.frame_rate) for s in self.streams)  # the slowest stream's hop
        if n >= min_samples:
            return self.codec.encode(wave.to(self.device))
        tokens = self.codec.encode(torch.nn.functional.pad(wave, (0, min_samples - n)).to(self.device))
        return {s.name: tokens[s.name][..., :max(1, int(n * s.frame_rate // self.sample_rate))] for s in self.streams}

    @torch.inference_mode()
    def _decode_batch(self, tokens: dict[str, Tensor], num_samples: int) -> Tensor:
        return self.codec.decode({k: v.to(self.device) for k, v in tokens.items()}, num_samples)

    def _token_file(self, tokens: dict[str, np.ndarray], num_samples: int, metadata: dict[str, Any]) -> TokenFile:
        return TokenFile(codec=self.codec_id, config_hash=self.config_hash, sample_rate=self.sample_rate,
                         num_samples=num_samples, streams=tuple(self.streams), tokens=tokens,
                         metadata={"codecfw": _codecfw_version(), **metadata})

    def _encode_mono(self, blocks, batch_size: int, chunked: bool, progress) -> tuple[dict[str, np.ndarray], int]:
        if chunked and self.policy.chunkable:
            return encode_stream(self._encode_batch, blocks, self.policy, self.streams, self.sample_rate,
                                 batch_size, progress)
        wave = torch.cat([b.reshape(-1).float() for b in blocks])
        tokens = self._encode_batch(wave[None, None])
        if progress is not None:
            progress(wave.numel())
        return {k: v[0].cpu().numpy().astype(np.int64) for k, v in tokens.items()}, wave.numel()

    # -- encoding --------------------------------------------------------------------------------------------
    def prepare(self, waveform: Tensor | Sequence[Tensor], sample_rate: int, *, mixdown: Mixdown = "mean",
                resample_input: bool = True) -> list[Tensor]:
        """Validate shapes, mix down and resample: a list of mono ``Tensor[N]`` at the codec's rate."""
        if isinstance(waveform, (list, tuple)):
            items = [torch.as_tensor(w) for w in waveform]
            if any(w.dim() not in (1, 2) for w in items):
                raise ValueError("list items must be Tensor[N] (mono) or Tensor[C x N] (channels)")
            items = [w[None] if w.dim() == 1 else w for w in items]
        else:
            waveform = torch.as_tensor(waveform)
            if waveform.dim() == 1:
                items = [waveform[None]]
            elif waveform.dim() == 2:
                items = [w[None] for w in waveform]
            elif waveform.dim() == 3:
                items = list(waveform)
            else:
                raise ValueError(f"waveform must be Tensor[N], Tensor[B x N] or Tensor[B x C x N]; got shape "
                                 f"{tuple(waveform.shape)}")
        if int(sample_rate) != self.sample_rate and not resample_input:
            raise ValueError(f"waveform at {sample_rate} Hz but the codec expects {self.sample_rate} Hz and "
                             f"resampling is off (resample_input=False)")
        out = []
        for i, item in enumerate(items):
            if item.shape[-1] == 0:
                raise ValueError(f"item {i}: empty waveform (0 samples)")
            item = item.detach().float().cpu()
            if not np.isfinite(item.numpy()).all():  # numpy: single-threaded, no thread-pool wake-up per item
                raise ValueError(f"item {i}: waveform contains NaN or inf")
            mono = to_mono(item, mixdown, f"item {i}")
            out.append(resample(mono, int(sample_rate), self.sample_rate))
        return out

    def encode(self, waveform: Tensor | Sequence[Tensor], sample_rate: int, *, mixdown: Mixdown = "mean",
               resample_input: bool = True, batch_size: int = 8, chunked: bool = True) -> list[TokenFile]:
        """Encode a batch of recordings; returns one :class:`TokenFile` per recording.

        Recordings of equal length that fit in one window are encoded together (``batch_size`` at a time); longer
        ones are encoded in windows, ``batch_size`` windows at a time. ``chunked=False`` encodes each recording
        whole (memory grows with duration; the reference result for checking the chunked one).
        """
        items = self.prepare(waveform, sample_rate, mixdown=mixdown, resample_input=resample_input)
        return self._encode_items(items, [{"source_sample_rate": int(sample_rate)}] * len(items), batch_size, chunked)

    def _encode_items(self, items: list[Tensor], metadata: list[dict[str, Any]], batch_size: int,
                      chunked: bool) -> list[TokenFile]:
        """Mono ``Tensor[N]`` items at the codec's rate → one token file each (``metadata[i]`` in its header)."""
        results: list[TokenFile | None] = [None] * len(items)
        whole: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            if self.processed_whole(item.numel(), chunked):
                whole.setdefault(item.numel(), []).append(i)
            else:
                tokens, n = self._encode_mono([item], batch_size, chunked, None)
                results[i] = self._token_file(tokens, n, metadata[i])
        for n, idx in whole.items():
            for k in range(0, len(idx), batch_size):
                group = idx[k:k + batch_size]
                tokens = self._encode_batch(torch.stack([items[i] for i in group])[:, None])
                for j, i in enumerate(group):
                    results[i] = self._token_file({s: v[j].cpu().numpy() for s, v in tokens.items()}, n,
                                                  metadata[i])
        return results  # type: ignore[return-value]

    def encode_file(self, path: str | os.PathLike, *, mixdown: Mixdown = "mean", resample_input: bool = True,
                    batch_size: int = 8, chunked: bool = True,
                    progress: Callable[[int], None] | None = None) -> TokenFile:
        """Encode an audio file, streamed block by block: memory bounded by the chunk window, not the duration.
        ``progress(samples)`` is called as windows finish (samples at the codec's rate)."""
        source = AudioSource(path, self.sample_rate, mixdown=mixdown, resample=resample_input)
        tokens, n = self._encode_mono(source.blocks(), batch_size, chunked, progress)
        return self._token_file(tokens, n, _source_metadata(source))

    def encode_files(self, sources: Sequence[AudioSource | str | os.PathLike], *, names: Sequence[str] | None = None,
                     mixdown: Mixdown = "mean", resample_input: bool = True, batch_size: int = 8,
                     chunked: bool = True, progress: Callable[[int], None] | None = None
                     ) -> Iterator[tuple[int, TokenFile | Exception]]:
        """Encode many audio files: yields ``(index, TokenFile)`` as each is done, or ``(index, exception)`` for a
        file that could not be read (:class:`~codecfw.core.data.audio.AudioError`) or encoded; one bad file never
        stops the others (``codecfw encode`` is this loop plus output paths).

        ``sources`` are paths or opened :class:`~codecfw.core.data.stream.AudioSource` objects (whose ``mixdown`` and
        resampling then apply). Files processed whole (:meth:`processed_whole`) are read and encoded ``batch_size``
        at a time, equal lengths together; longer ones are streamed window by window (memory bounded by the window).
        Each header records ``source`` (``names[i]``, default the file name), ``source_sample_rate``,
        ``source_channels`` and ``mixdown``. ``progress(samples)`` counts samples at the codec's rate."""
        pending: list[tuple[int, AudioSource]] = []

        def flush() -> Iterator[tuple[int, TokenFile | Exception]]:
            read: list[tuple[int, AudioSource, Tensor]] = []
            for i, source in pending:
                try:
                    read.append((i, source, source.read()))
                except AudioError as exc:
                    yield i, exc
            pending.clear()
            try:
                files = self._encode_items([w for _, _, w in read], [_source_metadata(s, names and names[i])
                                                                     for i, s, _ in read], batch_size, chunked)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not end the run
                files = [exc] * len(read)
            for (i, _, wave), result in zip(read, files):
                if progress is not None:
                    progress(wave.numel())
                yield i, result

        for i, source in enumerate(sources):
            try:
                if not isinstance(source, AudioSource):
                    source = AudioSource(source, self.sample_rate, mixdown=mixdown, resample=resample_input)
                if self.processed_whole(source.num_samples, chunked):
                    pending.append((i, source))
                    if len(pending) >= batch_size:
                        yield from flush()
                    continue
                tokens, n = self._encode_mono(source.blocks(), batch_size, chunked, progress)
                yield i, self._token_file(tokens, n, _source_metadata(source, names and names[i]))
            except (AudioError, OSError, RuntimeError, ValueError) as exc:
                yield i, exc
        yield from flush()

    # -- decoding --------------------------------------------------------------------------------------------
    def check(self, tf: TokenFile, path: str | os.PathLike | None = None) -> None:
        """Raise :class:`~codecfw.core.tokenizer.tokens.TokenFileMismatch` unless ``tf`` was written by this codec."""
        tf.check_compatible(self.codec_id, self.config_hash, self.streams, path)

    def tokens_from_tensors(self, tokens: dict[str, Tensor], num_samples: int | None = None) -> list[TokenFile]:
        """Wrap raw ``{stream: LongTensor[B x T]}`` (e.g. generated by a language model) as token files of this
        codec. ``num_samples`` defaults to the duration the first stream's tokens cover."""
        names = [s.name for s in self.streams]
        if sorted(tokens) != sorted(names):
            raise KeyError(f"tokens have streams {sorted(tokens)}; this codec has {names}")
        batch = {k: torch.as_tensor(v).reshape(-1, torch.as_tensor(v).shape[-1]) for k, v in tokens.items()}
        if num_samples is None:
            first = self.streams[0]
            num_samples = round(batch[first.name].shape[-1] * self.sample_rate / first.frame_rate)
        size = {v.shape[0] for v in batch.values()}
        if len(size) != 1:
            raise ValueError(f"streams have different batch sizes {sorted(size)}")
        return [self._token_file({k: v[i] for k, v in batch.items()}, num_samples, {})
                for i in range(size.pop())]

    def decode_blocks(self, tf: TokenFile, *, batch_size: int = 8, chunked: bool = True) -> Iterator[Tensor]:
        """Decode one token file as consecutive mono blocks at the codec's rate (bounded memory)."""
        self.check(tf)
        if not self.processed_whole(tf.num_samples, chunked):
            yield from decode_stream(self._decode_batch, tf.tokens, tf.num_samples, self.policy, self.streams,
                                     self.sample_rate, batch_size)
        else:
            yield self._decode_batch(tf.as_tensors(), tf.num_samples)[0].reshape(-1).float().cpu()

    def decode(self, tokens: TokenFile | Sequence[TokenFile] | dict[str, Tensor], *, num_samples: int | None = None,
               sample_rate: int | None = None, batch_size: int = 8, chunked: bool = True) -> Any:
        """Decode token files (→ ``list[Tensor[1 x N]]``, one per file) or raw ``{stream: LongTensor[B x T]}``
        (→ ``Tensor[B x 1 x N]``). Output is at the codec's rate unless ``sample_rate`` is given."""
        raw = isinstance(tokens, dict)
        files = self.tokens_from_tensors(tokens, num_samples) if raw else (
            [tokens] if isinstance(tokens, TokenFile) else list(tokens))
        for tf in files:
            self.check(tf)
        out: list[Tensor | None] = [None] * len(files)
        groups: dict[tuple, list[int]] = {}
        for i, tf in enumerate(files):
            if not self.processed_whole(tf.num_samples, chunked):
                out[i] = torch.cat(list(self.decode_blocks(tf, batch_size=batch_size)))[None]
            else:
                groups.setdefault((tf.num_samples, *sorted(tf.lengths().items())), []).append(i)
        for (n, *_), idx in groups.items():
            for k in range(0, len(idx), batch_size):
                group = idx[k:k + batch_size]
                batch = {s.name: torch.from_numpy(np.stack([files[i].tokens[s.name] for i in group]))
                         for s in self.streams}
                wave = self._decode_batch(batch, n).float().cpu()
                for j, i in enumerate(group):
                    out[i] = wave[j].reshape(1, -1)
        if sample_rate is not None and sample_rate != self.sample_rate:
            out = [resample(w, self.sample_rate, int(sample_rate)) for w in out]
        return torch.stack(out) if raw else out  # type: ignore[arg-type]

    def decode_to_file(self, tf: TokenFile, path: str | os.PathLike, *, sample_rate: int | None = None,
                       subtype: str | None = None, batch_size: int = 8, chunked: bool = True,
                       progress: Callable[[int], None] | None = None) -> Path:
        """Decode into a FLAC/WAV file, streamed and written atomically. ``sample_rate`` resamples the output."""
        self.check(tf)
        with AudioSink(path, self.sample_rate, output_rate=sample_rate, subtype=subtype) as sink:
            for block in self.decode_blocks(tf, batch_size=batch_size, chunked=chunked):
                sink.write(block)
                if progress is not None:
                    progress(block.numel())
        return Path(path)

    def decode_files(self, files: Sequence[TokenFile], targets: Sequence[str | os.PathLike], *,
                     sample_rate: int | Literal["source"] | None = None, subtype: str | None = None,
                     batch_size: int = 8, chunked: bool = True, progress: Callable[[int], None] | None = None
                     ) -> Iterator[tuple[int, Path | Exception]]:
        """Decode token files into FLAC/WAV files (``targets[i]``, written atomically): yields ``(index, path)`` as
        each is written, or ``(index, exception)`` when one fails; the others go on (``codecfw decode`` is this
        loop plus input and output paths). Files processed whole (:meth:`processed_whole`) are decoded
        ``batch_size`` at a time; longer ones window by window, streamed to the file. ``sample_rate`` resamples the
        output; ``"source"`` restores each file's ``source_sample_rate`` (the codec's rate when it has none)."""

        def rate(tf: TokenFile) -> int | None:
            if sample_rate == "source":
                return int(tf.metadata.get("source_sample_rate") or self.sample_rate)
            return sample_rate

        def write(i: int, wave: Tensor) -> Path:
            with AudioSink(targets[i], self.sample_rate, output_rate=rate(files[i]), subtype=subtype) as sink:
                sink.write(wave.reshape(-1))
            return Path(targets[i])

        pending: list[int] = []

        def flush() -> Iterator[tuple[int, Path | Exception]]:
            try:
                waves: list[Any] = self.decode([files[i] for i in pending], batch_size=batch_size, chunked=chunked)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not end the run
                waves = [exc] * len(pending)
            for i, wave in zip(pending, waves):
                try:
                    yield i, wave if isinstance(wave, Exception) else write(i, wave)
                except (OSError, ValueError) as exc:
                    yield i, exc
                if progress is not None:
                    progress(files[i].num_samples)
            pending.clear()

        for i, tf in enumerate(files):
            if self.processed_whole(tf.num_samples, chunked):
                pending.append(i)
                if len(pending) >= batch_size:
                    yield from flush()
                continue
            try:
                yield i, self.decode_to_file(tf, targets[i], sample_rate=rate(tf), subtype=subtype,
                                             batch_size=batch_size, chunked=chunked, progress=progress)
            except (OSError, RuntimeError, ValueError) as exc:
                yield i, exc
        if pending:
            yield from flush()


def _source_metadata(source: AudioSource, name: str | None = None) -> dict[str, Any]:
    """What a token file records about the audio it was encoded from."""
    info = source.info
    return {"source": name or os.path.basename(info.path), "source_sample_rate": info.sample_rate,
            "source_channels": info.channels, "mixdown": source.mixdown}
