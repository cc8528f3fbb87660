#!/usr/bin/env bash
# Prepare, on a machine with network, what the bare GPU machine lacks (it reaches no package registry): wheels of
# codecfw's dependencies that its image does not hold, for its Python 3.12 on x86-64, in .whl/ (ignored by git,
# carried with `carry: [".whl", ".ref"]`), and a copy of the SemantiCodec reference checkout in .ref/ when one is at
# hand (argument 1, default /work/.mirror/haoheliu+SemantiCodec-inference/repo, a git directory or a checkout).
# docs/gpu.md gives the command that runs the GPU check with them. Run from anywhere:  bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# Versions pinned to this project's environment; the image already has torch, torchaudio, transformers, numpy,
# einops, sympy, huggingface-hub, safetensors, pillow, regex, requests, pyyaml, tqdm, tensorboard, pluggy, pytest
# (typing_extensions and zipp come along anyway: pydantic and importlib_metadata need recent ones).
WHEELS=(diffusers==0.42.1 importlib_metadata==10.2.0 vector-quantize-pytorch==1.32.0 einx==0.4.3 frozendict==2.5.1
        loguru==0.7.3 torch-einops-utils==0.2.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing_extensions==4.16.0 zipp==4.1.2 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
        faiss-cpu==1.15.1)
mkdir -p .whl
PLATFORMS=()
for n in 17 27 28 34 35 39; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d .whl "${WHEELS[@]}"
ls .whl | sort
du -sh .whl

REF=${1:-/work/.mirror/haoheliu+SemantiCodec-inference/repo}
if [ -e "$REF" ]; then
    rm -rf .ref/SemantiCodec-inference && mkdir -p .ref/SemantiCodec-inference
    if git --git-dir "$REF" rev-parse HEAD >/dev/null 2>&1; then
        git --git-dir "$REF" archive HEAD semanticodec | tar -x -C .ref/SemantiCodec-inference
    else
        cp -r "$REF/semanticodec" .ref/SemantiCodec-inference/
    fi
    echo "reference: .ref/SemantiCodec-inference ($(du -sh .ref | cut -f1))"
else
    echo "no SemantiCodec reference at $REF: the decode section will say so and time codecfw alone"
fi
