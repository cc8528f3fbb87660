"""Semantic probe: how much label information a codec's quantized latent keeps (SemantiCodec paper, Table III).

Protocol (Liu et al., "SemantiCodec", §IV-C, following HEAR): the codec is frozen; each clip's *quantized* features —
what the decoder is conditioned on, rebuilt from the tokens — are averaged over time into one clip-level vector; a
shallow MLP with two linear layers is trained on labelled clips and its accuracy reported, once with **all streams**
and once with the **first stream only** (what an autoregressive LM over the first VQ layer would see).

Features from the tokens:

* all streams: ``concat(mean_t semantic.from_tokens(...).quantized, mean_t acoustic.from_tokens(...).quantized)``
  (a slot without a quantized output contributes nothing);
* first stream: a slot may implement ``stream_embeddings(tokens) -> {stream: Tensor[B x D x T]}`` (e.g. one RVQ
  layer's codebook vectors); otherwise, when the first stream is its slot's only stream, that slot's
  ``from_tokens`` output; otherwise the slot's ``from_tokens`` with that stream alone; when all fail, the clip's
  normalised token histogram (a bag of codes). Which one was used is recorded.

Evaluation split: the manifest's ``split`` column when it has a train split and a valid/test split; otherwise
stratified k-fold cross-validation (mean ± std over folds). Features are standardised with training statistics.
HEAR grid-searches the MLP's hidden size and learning rate with early stopping; this probe uses one fixed setting
(every value is an argument) so that runs are comparable and fast.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

logger = logging.getLogger("codecfw.probe")


def _mean_t(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.float().mean(-1).reshape(-1)


@torch.inference_mode()
def clip_features(codec: Any, wav: Tensor) -> tuple[Tensor, Tensor, str]:
    """wav : Tensor[N] → (all-stream features Tensor[D], first-stream features Tensor[D1], how the latter was made)."""
    device = next((p.device for p in codec.parameters()), torch.device("cpu"))
    tokens = codec.encode(wav.to(device, torch.float32)[None, None])
    sem_names = [s.name for s in codec.semantic.streams()]
    ac_names = [s.name for s in codec.acoustic.streams()]
    semantic = codec.semantic.from_tokens({k: tokens[k] for k in sem_names})
    acoustic = codec.acoustic.from_tokens({k: tokens[k] for k in ac_names}, semantic)
    parts = [v for v in (_mean_t(semantic.quantized), _mean_t(acoustic.quantized)) if v is not None]
    if not parts:
        raise ValueError("the codec exposes no quantized features (SemanticOutput.quantized and "
                         "AcousticOutput.quantized are both None)")
    first = codec.streams()[0]
    in_semantic = first.name in sem_names
    slot, names = (codec.semantic, sem_names) if in_semantic else (codec.acoustic, ac_names)
    feature, how = None, ""
    emb = slot.stream_embeddings({k: tokens[k] for k in names})  # the slot contract's default: {}
    if first.name in emb:
        feature, how = _mean_t(emb[first.name]), "codebook vectors (stream_embeddings)"
    if feature is None and len(names) == 1:
        feature, how = _mean_t(semantic.quantized if in_semantic else acoustic.quantized), \
            "quantized features (the slot's only stream)"
    if feature is None:
        try:
            sub = {first.name: tokens[first.name]}
            out = slot.from_tokens(sub) if in_semantic else slot.from_tokens(sub, semantic)
            feature, how = _mean_t(out.quantized), "quantized features from the first stream alone"
        except Exception:  # noqa: BLE001 - slots need not support partial token sets
            feature = None
    if feature is None:
        ids = tokens[first.name].reshape(-1).long().cpu()
        feature = torch.bincount(ids, minlength=first.codebook_size).float() / max(1, ids.numel())
        how = "token histogram (bag of codes)"
    return torch.cat([p.cpu() for p in parts]), feature.cpu(), how


class MLPProbe(nn.Module):
    """Two linear layers: ``Linear(D, hidden) → ReLU → Dropout → Linear(hidden, classes)``."""

    def __init__(self, dim: int, classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def train_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, classes: int, *,
                hidden: int = 256, epochs: int = 300, lr: float = 1e-3, weight_decay: float = 1e-4,
                dropout: float = 0.1, seed: int = 0) -> float:
    """Full-batch Adam on standardised features; returns test accuracy in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few hundred tiny matmuls: extra threads only add synchronisation (30x slower)
    try:
        return _fit(x_train, y_train, x_test, y_test, classes, hidden, epochs, lr, weight_decay, dropout, gen)
    finally:
        torch.set_num_threads(threads)


def _fit(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, classes: int, hidden: int, epochs: int,
         lr: float, weight_decay: float, dropout: float, gen: torch.Generator) -> float:
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-6)
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = MLPProbe(x_train.shape[1], classes, hidden, dropout)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        with torch.enable_grad():
            model.train()
            for _ in range(epochs):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xtr), y_train)
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(xte).argmax(-1) == y_test).float().mean())


def stratified_folds(labels: Sequence[int], k: int, seed: int = 0) -> list[list[int]]:
    """Indices split into ``k`` folds with each class spread evenly (shuffled per class with ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        for j, p in enumerate(torch.randperm(len(idx), generator=gen).tolist()):
            folds[(offset + j) % k].append(idx[p])
        offset += len(idx)
    return [sorted(f) for f in folds]


def probe_accuracy(features: Tensor, labels: list[int], splits: list[str | None], classes: int, *, folds: int = 5,
                   seed: int = 0, **train_kwargs: Any) -> dict[str, Any]:
    """Accuracy with the manifest's split if it has one, else stratified k-fold cross-validation."""
    y = torch.tensor(labels)
    train_idx = [i for i, s in enumerate(splits) if s == "train"]
    test_idx = [i for i, s in enumerate(splits) if s in ("valid", "test", "eval")]
    if train_idx and test_idx:
        acc = train_probe(features[train_idx], y[train_idx], features[test_idx], y[test_idx], classes, seed=seed,
                          **train_kwargs)
        return {"accuracy": acc, "std": 0.0, "protocol": f"manifest split ({len(train_idx)} train / "
                                                            f"{len(test_idx)} test)"}
    smallest = min(labels.count(c) for c in set(labels))
    k = max(2, min(folds, smallest))
    accs = []
    for f, test in enumerate(stratified_folds(labels, k, seed)):
        test_set = set(test)
        train = [i for i in range(len(labels)) if i not in test_set]
        accs.append(train_probe(features[train], y[train], features[test], y[test], classes, seed=seed + f,
                                **train_kwargs))
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
    return {"accuracy": mean, "std": std, "protocol": f"stratified {k}-fold cross-validation", "folds": accs}


def run_probe(system: Any, clips: Sequence[Any], label_key: str = "domain", *, max_seconds: float | None = None,
              folds: int = 5, seed: int = 0, **train_kwargs: Any) -> dict[str, Any]:
    """Probe a :class:`~.evaluate.CodecSystem` on labelled clips (``label_key``: ``domain`` or any
    manifest column). Returns accuracies for all streams and the first stream, the majority-class baseline and the
    protocol. Errors are returned in the dict (``error``), never raised: the probe must not kill an eval run."""
    from ..data.dataset import read_clip

    labelled = [(c, c.domain if label_key == "domain" else c.meta.get(label_key)) for c in clips]
    labelled = [(c, str(lab)) for c, lab in labelled if lab not in (None, "")]
    classes = sorted({lab for _, lab in labelled})
    base = {"label_key": label_key, "n_clips": len(labelled), "classes": classes}
    if len(classes) < 2:
        return {**base, "error": f"need at least two classes of {label_key!r}, found {classes}"}
    has_split = any(c.split == "train" for c, _ in labelled) and \
        any(c.split in ("valid", "test", "eval") for c, _ in labelled)
    counts = {k: sum(1 for _, lab in labelled if lab == k) for k in classes}
    if not has_split and min(counts.values()) < 2:
        return {**base, "error": f"cross-validation needs at least 2 clips per class of {label_key!r}; "
                                 f"counts: {counts}"}
    feats_all, feats_first, how = [], [], ""
    try:
        for clip, _ in labelled:
            wav = read_clip(clip, system.sample_rate, max_seconds)
            a, f, how = clip_features(system.codec, wav)
            feats_all.append(a)
            feats_first.append(f)
    except Exception as exc:  # noqa: BLE001
        logger.error("probe on %s failed: %s: %s", system.name, type(exc).__name__, exc)
        return {**base, "error": f"{type(exc).__name__}: {exc}"}
    labels = [classes.index(lab) for _, lab in labelled]
    splits = [c.split for c, _ in labelled]
    majority = max(labels.count(i) for i in range(len(classes))) / len(labels)
    all_res = probe_accuracy(torch.stack(feats_all), labels, splits, len(classes), folds=folds, seed=seed,
                             **train_kwargs)
    first_res = probe_accuracy(torch.stack(feats_first), labels, splits, len(classes), folds=folds, seed=seed,
                               **train_kwargs)
    settings = {"hidden": 256, "epochs": 300, "lr": 1e-3, "weight_decay": 1e-4, "dropout": 0.1, **train_kwargs,
                "seed": seed, "standardise": "train mean/std", "optimizer": "Adam, full batch"}
    return {**base, "protocol": all_res.pop("protocol"), "majority_baseline": majority, "mlp": settings,
            "all_streams": {**all_res, "feature_dim": int(feats_all[0].numel()),
                            "streams": [s.name for s in system.streams]},
            "first_stream": {**{k: v for k, v in first_res.items() if k != "protocol"},
                             "feature_dim": int(feats_first[0].numel()), "stream": system.streams[0].name,
                             "features": how}}
