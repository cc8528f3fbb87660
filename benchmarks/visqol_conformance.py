"""Compare the ``visqol-python`` port (what ``visqol:backend=port`` uses) with Google ViSQOL v3.3.3's own
conformance values (``src/include/conformance.h`` of github.com/google/visqol, checked by its C++ tests).

    python benchmarks/visqol_conformance.py /path/to/google-visqol/testdata [--quick]

The test files are in google/visqol's repository (``testdata/``), not in the port's wheel. Each pair is scored by
the port from the files (the port reads and mixes down the files as the C++ tool does) and through codecfw's
``visqol`` metric from arrays (codecfw's channel-mean read and resampler), next to the published value.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# (mode, reference, degraded, published MOS-LQO in conformance.h, constant name)
CASES = [
    ("speech", "clean_speech/CA01_01.wav", "clean_speech/transcoded_CA01_01.wav", 3.3129234313964844,
     "kConformanceSpeechCA01TranscodedLattice"),
    ("speech", "clean_speech/CA01_01.wav", "clean_speech/CA01_01.wav", 4.505550384521484,
     "kConformanceCA01PerfectScoreLattice"),
    ("audio", "conformance_testdata_subset/guitar48_stereo.wav",
     "conformance_testdata_subset/guitar48_stereo_64kbps_aac.wav", 4.349722308064298, "kConformanceGuitar64aac"),
    ("audio", "conformance_testdata_subset/steely48_stereo.wav",
     "conformance_testdata_subset/steely48_stereo_lp7.wav", 2.2501683734385183, "kConformanceSteelyLp7"),
    ("audio", "conformance_testdata_subset/strauss48_stereo.wav",
     "conformance_testdata_subset/strauss48_stereo_lp35.wav", 1.3888791489130758, "kConformanceStraussLp35"),
    ("audio", "conformance_testdata_subset/castanets48_stereo.wav",
     "conformance_testdata_subset/castanets48_stereo.wav", 4.732101253042348, "kConformanceCastanetsIdentity"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("testdata", type=Path, help="google/visqol's testdata/ folder")
    parser.add_argument("--quick", action="store_true", help="speech cases and one audio case only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()

    from visqol import VisqolApi
    from codecfw.core.data.audio import read_audio
    from codecfw.plugins.metric.perceptual import ViSQOL, ViSQOLConfig

    rows = []
    cases = CASES[:3] if args.quick else CASES
    for mode, ref, deg, published, const in cases:
        api = VisqolApi()
        api.create(mode=mode, use_lattice_model=True if mode == "speech" else None)
        start = time.perf_counter()
        port_files = api.measure(str(args.testdata / ref), str(args.testdata / deg)).moslqo
        seconds = time.perf_counter() - start
        rate = 16000 if mode == "speech" else 48000
        metric = ViSQOL(ViSQOLConfig(mode=mode, backend="port", domains=None))
        metric.check()
        r, d = read_audio(args.testdata / ref, rate)[0], read_audio(args.testdata / deg, rate)[0]
        n = min(r.numel(), d.numel())
        via_metric = metric(d[:n], r[:n], rate)
        row = {"mode": mode, "case": const, "published": published, "port_files": port_files,
               "codecfw_metric": via_metric, "diff_port": port_files - published, "port_seconds": seconds}
        rows.append(row)
        print(f"{const:42s} {mode:6s} published {published:.4f}  port {port_files:.4f} "
              f"({port_files - published:+.4f})  codecfw visqol {via_metric:.4f}  [{seconds:.0f} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
