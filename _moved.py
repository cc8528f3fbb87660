"""Old module paths of codecfw's 0.1 layout, kept importable for code written against it.

Issue 14 regrouped ``codecfw.core`` into areas (``data/``, ``training/``, ``tokenizer/``, ``evaluation/``,
``clustering/``) and moved layers shared between plugin slots to ``codecfw.plugins.nn`` and the whole-codec
converters to ``codecfw.plugins.pretrained``. Importing an old path gives the module at its new path (the same
module object), so ``from codecfw.core.trainer import Trainer`` keeps working. codecfw's own code uses the new
paths only (``tests/test_architecture.py`` checks).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module path → new module path
MOVED = {
    "codecfw.core.api": "codecfw.core.tokenizer.api",
    "codecfw.core.chunking": "codecfw.core.tokenizer.chunking",
    "codecfw.core.tokens": "codecfw.core.tokenizer.tokens",
    "codecfw.core.audio": "codecfw.core.data.audio",
    "codecfw.core.audio_stream": "codecfw.core.data.stream",
    "codecfw.core.trainer": "codecfw.core.training.trainer",
    "codecfw.core.objectives": "codecfw.core.training.objectives",
    "codecfw.core.distributed": "codecfw.core.training.distributed",
    "codecfw.core.ema": "codecfw.core.training.ema",
    "codecfw.core.evaluate": "codecfw.core.evaluation.evaluate",
    "codecfw.core.report": "codecfw.core.evaluation.report",
    "codecfw.core.anchors": "codecfw.core.evaluation.anchors",
    "codecfw.core.probe": "codecfw.core.evaluation.probe",
    "codecfw.core.ablate": "codecfw.core.evaluation.ablate",
    "codecfw.core.feature_store": "codecfw.core.clustering.feature_store",
    "codecfw.plugins.acoustic.dac_blocks": "codecfw.plugins.nn.dac",
    "codecfw.plugins.semantic.semantic_conv": "codecfw.plugins.nn.semantic_conv",
    "codecfw.plugins.semantic.xcodec_checkpoint": "codecfw.plugins.pretrained.xcodec",
    "codecfw.plugins.semantic.semanticodec_checkpoint": "codecfw.plugins.pretrained.semanticodec",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path in :data:`MOVED` to the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
