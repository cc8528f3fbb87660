"""Systems run through external command-line tools, scored by the same metrics as codecfw's codecs: the non-neural
anchors Codec2 and Opus, and any codec given as a shell command (:class:`CommandSystem`).

* Codec2 (Rowe; Debian/Ubuntu package ``codec2``: ``c2enc``/``c2dec``) at 700C, 1200, 2400 and 3200 bit/s: 8 kHz
  narrow-band speech codec, so it runs on speech clips only; input is resampled to 8 kHz and the output back to
  the evaluation rate.
* Opus (RFC 6716; package ``opus-tools``: ``opusenc``/``opusdec``) at 6, 8, 10 and 12 kbit/s, hard CBR, fed 16 kHz
  PCM and decoded at 16 kHz as float samples, on every clip. ``--serial 0`` and float output (no dither) keep
  runs bit-reproducible.

The declared bitrate is the mode's nominal rate; ``bitrate_kbps_measured`` is what the codec actually spent: the
Codec2 bit file's size (whole bytes per frame, so 700C spends 800 bit/s) and the Opus audio packets' bytes (Ogg
framing and header packets excluded). When a tool is missing the anchor is reported unavailable, never fatal.

``codecfw eval --command 'ENC {in} {bits} && DEC {bits} {out}'`` evaluates any other codec the same way: per clip the
input is written as a WAV file at ``rate`` (16-bit PCM unless told otherwise), the command runs in a shell with the
placeholders replaced by quoted paths, and ``{out}`` is read back (any rate and channel count soundfile reads;
mixed down and resampled). ``bitrate_kbps_measured`` is the size of ``{bits}`` when the command writes it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .evaluate import Reconstruction, System, SystemUnavailable

CODEC2_MODES = ("700C", "1200", "2400", "3200")
OPUS_KBPS = (6, 8, 10, 12)


def _pcm16(wav: Tensor) -> bytes:
    return (wav.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().astype("<i2").tobytes()


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.decode(errors='replace')[-300:]}")


def _tool_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


class AnchorSystem(System):
    kind = "anchor"
    tools: tuple[str, ...] = ()
    package = ""
    nominal_bps: float = 0.0

    @property
    def bitrate(self) -> float | None:
        return self.nominal_bps

    @property
    def token_rate(self) -> float | None:
        return None

    def check(self) -> None:
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            raise SystemUnavailable(f"{', '.join(missing)} not on PATH: install the '{self.package}' package "
                                    f"(Debian/Ubuntu: apt-get install {self.package})")


class Codec2Anchor(AnchorSystem):
    """Codec2 at one mode. process(wav : Tensor[N] at 8 kHz) → Tensor[N] at 8 kHz."""

    tools = ("c2enc", "c2dec")
    package = "codec2"
    sample_rate = 8000
    domains = ("speech",)

    def __init__(self, mode: str) -> None:
        if mode not in CODEC2_MODES:
            raise ValueError(f"codec2 mode {mode!r}; supported: {', '.join(CODEC2_MODES)}")
        self.mode = mode
        self.name = f"codec2-{mode}"
        self.nominal_bps = float(mode.rstrip("C"))

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "mode": self.mode, "tools": "c2enc/c2dec", "package": self.package,
                "input": "8 kHz 16-bit PCM", "domains": list(self.domains)}

    def process(self, wav: Tensor) -> Reconstruction:
        with tempfile.TemporaryDirectory(prefix="codecfw-codec2-") as tmp:
            raw, bits, dec = Path(tmp) / "in.raw", Path(tmp) / "out.bit", Path(tmp) / "out.raw"
            raw.write_bytes(_pcm16(wav))
            _run(["c2enc", self.mode, str(raw), str(bits)])
            _run(["c2dec", self.mode, str(bits), str(dec)])
            out = np.frombuffer(dec.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
            n_bits = bits.stat().st_size * 8
        y = torch.from_numpy(out.copy())
        y = torch.nn.functional.pad(y, (0, max(0, wav.numel() - y.numel())))[: wav.numel()]  # whole frames only
        return Reconstruction(y, encoded_bits=n_bits)


def ogg_packet_bytes(data: bytes) -> list[int]:
    """Sizes of the packets in an Ogg stream (RFC 3533 page layout; lacing values of 255 continue a packet)."""
    sizes, current, pos = [], 0, 0
    while pos + 27 <= len(data):
        if data[pos:pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_segments = data[pos + 26]
        lacing = data[pos + 27: pos + 27 + n_segments]
        for value in lacing:
            current += value
            if value < 255:
                sizes.append(current)
                current = 0
        pos += 27 + n_segments + sum(lacing)
    return sizes


class OpusAnchor(AnchorSystem):
    """Opus at one bitrate (hard CBR). process(wav : Tensor[N] at 16 kHz) → Tensor[N] at 16 kHz."""

    tools = ("opusenc", "opusdec")
    package = "opus-tools"
    sample_rate = 16000

    def __init__(self, kbps: float) -> None:
        if not 6 <= kbps <= 256:
            raise ValueError(f"opus bitrate {kbps} kbps outside opusenc's 6-256")
        self.kbps = kbps
        self.name = f"opus-{kbps:g}k"
        self.nominal_bps = float(kbps) * 1000

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "kbps": self.kbps, "package": self.package,
                "opusenc": ["--bitrate", str(self.kbps), "--hard-cbr", "--serial", "0"],
                "opusdec": ["--rate", "16000", "--float"], "version": _tool_version(["opusenc", "--version"])}

    def process(self, wav: Tensor) -> Reconstruction:
        with tempfile.TemporaryDirectory(prefix="codecfw-opus-") as tmp:
            raw, enc, dec = Path(tmp) / "in.raw", Path(tmp) / "out.opus", Path(tmp) / "out.raw"
            raw.write_bytes(_pcm16(wav))
            _run(["opusenc", "--quiet", "--bitrate", f"{self.kbps:g}", "--hard-cbr", "--serial", "0", "--raw",
                  "--raw-rate", str(self.sample_rate), "--raw-chan", "1", str(raw), str(enc)])
            _run(["opusdec", "--quiet", "--rate", str(self.sample_rate), "--float", str(enc), str(dec)])
            out = np.frombuffer(dec.read_bytes(), dtype="<f4").copy()
            packets = ogg_packet_bytes(enc.read_bytes())
        y = torch.from_numpy(out)
        y = torch.nn.functional.pad(y, (0, max(0, wav.numel() - y.numel())))[: wav.numel()]
        return Reconstruction(y, encoded_bits=8 * sum(packets[2:]))  # packets 0-1: OpusHead, OpusTags


class CommandSystem(System):
    """Any codec as a shell command with the placeholders ``{in}`` (input WAV), ``{bits}`` (a path for the encoded
    file), ``{out}`` (the decoded audio file to write) and ``{rate}`` (the input's sample rate).

    process(wav : Tensor[N] at ``rate``) → Tensor[N] at ``rate`` (the output is trimmed or zero-padded to N).
    """

    kind = "command"
    PLACEHOLDERS = ("in", "bits", "out", "rate")

    def __init__(self, command: str, name: str = "command", rate: int = 16000, subtype: str = "PCM_16",
                 timeout: float | None = 600.0, shell: str = "/bin/sh") -> None:
        import re

        unknown = sorted(set(re.findall(r"\{(\w+)\}", command)) - set(self.PLACEHOLDERS))
        missing = [p for p in ("in", "out") if "{" + p + "}" not in command]
        if unknown or missing:
            raise ValueError(f"--command {command!r}: " + "; ".join(
                ([f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}"] if unknown else []) +
                ([f"missing {', '.join('{' + m + '}' for m in missing)}"] if missing else [])) +
                " (placeholders: {in} input WAV, {bits} encoded file, {out} decoded audio, {rate} sample rate)")
        if rate <= 0:
            raise ValueError(f"command rate must be > 0 Hz, got {rate}")
        self.command, self.name, self.sample_rate = command, name, int(rate)
        self.subtype, self.timeout, self.shell = subtype, timeout, shell

    @property
    def bitrate(self) -> float | None:
        return None

    @property
    def token_rate(self) -> float | None:
        return None

    def check(self) -> None:
        if shutil.which(self.shell) is None and not Path(self.shell).is_file():
            raise SystemUnavailable(f"shell {self.shell!r} not found for --command")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "command": self.command, "input": f"WAV {self.subtype} mono at "
                f"{self.sample_rate} Hz", "output": "read with soundfile, channel mean, resampled to the input rate",
                "shell": self.shell, "timeout_s": self.timeout, "measured_bits": "size of {bits} when written"}

    def render(self, paths: dict[str, Path]) -> str:
        """The command with every placeholder replaced by a shell-quoted value."""
        values = {k: shlex.quote(str(v)) for k, v in paths.items()}
        values["rate"] = str(self.sample_rate)
        out = self.command
        for key, value in values.items():
            out = out.replace("{" + key + "}", value)
        return out

    def process(self, wav: Tensor) -> Reconstruction:
        from ..data.audio import read_audio, write_audio

        with tempfile.TemporaryDirectory(prefix="codecfw-command-") as tmp:
            paths = {"in": Path(tmp) / "in.wav", "bits": Path(tmp) / "encoded.bin", "out": Path(tmp) / "out.wav"}
            write_audio(paths["in"], wav.clamp(-1, 1), self.sample_rate, subtype=self.subtype)
            cmd = self.render(paths)
            try:
                done = subprocess.run([self.shell, "-c", cmd], capture_output=True, check=False, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"command timed out after {self.timeout} s: {cmd}") from None
            if done.returncode != 0:
                raise RuntimeError(f"command exited {done.returncode}: {cmd}: "
                                   f"{done.stderr.decode(errors='replace').strip()[-300:]}")
            if not paths["out"].is_file():
                raise RuntimeError(f"command wrote no output file {{out}} ({paths['out'].name}): {cmd}")
            y = read_audio(paths["out"], self.sample_rate)[0]  # channel mean, resampled (torchaudio sinc)
            n_bits = paths["bits"].stat().st_size * 8 if paths["bits"].is_file() else None
        y = torch.nn.functional.pad(y, (0, max(0, wav.numel() - y.numel())))[: wav.numel()]
        return Reconstruction(y, encoded_bits=n_bits)


def build_anchors(specs: Sequence[str]) -> list[AnchorSystem]:
    """``codec2`` (all four modes), ``codec2-1200``, ``opus`` (6/8/10/12 kbps), ``opus-8k`` → anchor systems."""
    anchors: list[AnchorSystem] = []
    for spec in (s.strip() for item in specs for s in item.split(",") if s.strip()):
        name, _, mode = spec.partition("-")
        if name == "codec2":
            anchors += [Codec2Anchor(m) for m in ([mode.upper()] if mode else CODEC2_MODES)]
        elif name == "opus":
            anchors += [OpusAnchor(float(mode.rstrip("kK")))] if mode else [OpusAnchor(k) for k in OPUS_KBPS]
        else:
            raise ValueError(f"unknown anchor {spec!r}; anchors: codec2[-{'|'.join(CODEC2_MODES)}], "
                             f"opus[-<kbps>k]")
    return anchors

