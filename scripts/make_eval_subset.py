"""A deterministic evaluation subset of a manifest: every clip with a transcript (or at most ``--transcribed`` per
group), plus at most N others per (domain, kind) group, drawn with a fixed seed. Written next to the source manifest (its relative paths stay valid).

    python scripts/make_eval_subset.py ~/codecfw-data/corpus/test.jsonl --per-group 150 -o test_eval.jsonl

Why: `codecfw eval` of a 1.4 kbps codec plus four anchors with PESQ, STOI, Whisper WER and the probe costs about
1.5 CPU-s per clip on this machine; the corpus's test split has 2803 clips (mostly 1-3 s game voice lines and
sound effects), i.e. over an hour. The subset keeps every clip the Whisper WER is computed on and enough of each
other group for means whose standard error is well under the differences being compared.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--per-group", type=int, default=150, help="clips without transcript per (domain, kind)")
    parser.add_argument("--transcribed", type=int, default=None,
                        help="at most this many transcribed clips per (domain, kind) (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True, help="file name, written in the manifest's folder")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    keep: list[dict] = []
    groups: dict[tuple[str, str, bool], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("domain", ""), r.get("kind", ""), bool(r.get("transcript")))].append(r)
    for key in sorted(groups):
        members = groups[key]
        random.Random(f"{args.seed}:{key}").shuffle(members)
        limit = (args.transcribed if key[2] else args.per_group)
        keep += members if limit is None else members[:limit]
    order = {id(r): i for i, r in enumerate(rows)}
    keep.sort(key=lambda r: order[id(r)])
    out = args.manifest.parent / Path(args.out).name
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(out)
    counts: dict[str, int] = defaultdict(int)
    for r in keep:
        counts[f"{r.get('domain')}/{r.get('kind')}{' (transcript)' if r.get('transcript') else ''}"] += 1
    print(f"{out}: {len(keep)} of {len(rows)} clips, {sum(r.get('seconds', 0) for r in keep) / 60:.1f} min; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
