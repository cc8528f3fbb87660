"""Two CPU processes with gloo: global batch semantics, identical quantizer state, ranks stopping together."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from codecfw.core.config import validate_recipe
from codecfw.core.training.trainer import Trainer

# absolute import: the spawned children unpickle ddp_worker by its module name
from codecfw.tests.training_support import ddp_worker, make_corpus, read_metrics, toy_recipe, training_registry


pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unsynced(recipe: dict) -> dict:
    recipe["acoustic"]["sync_codebook"] = False
    recipe["train"]["sync_buffers"] = False
    return recipe


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """One two-process gloo job running three scenarios (one spawn: start-up dominates the cost)."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = make_corpus(root / "corpus", corrupt=False)
    common = dict(steps=4, valid_every=100, checkpoint_every=100)
    per_rank = toy_recipe(corpus, **common, ema_decay=0.5)
    per_rank["data"]["batch_size"] = 1
    scenarios = [
        # per-rank batch 1 on 2 ranks ≙ batch 2 in one process (compared below)
        ("global", per_rank, "data"),
        # EMA codebook with k-means init and dead-code revival (vector-quantize-pytorch buffers)
        ("ema_vq", toy_recipe(corpus, acoustic="toy_ema_vq", **common), "data"),
        # negative control: no statistics all-reduce, no buffer broadcast → the replicas' codebooks drift apart
        ("ema_vq_unsynced", _unsynced(toy_recipe(corpus, acoustic="toy_ema_vq", **common)), "data"),
        # rank 0 has 3 batches per epoch, rank 1 has 5
        ("unequal", toy_recipe(corpus, objective="diffusion", steps=8, valid_every=100, checkpoint_every=100),
         "unequal"),
    ]
    mp.spawn(ddp_worker, args=(2, _free_port(), str(root), scenarios), nprocs=2, join=True)
    results = {name: [torch.load(root / f"{name}.rank{r}.pt", weights_only=True) for r in range(2)]
               for name, _, _ in scenarios}
    return root, corpus, scenarios, results


def test_two_ranks_of_batch_1_train_like_one_process_of_batch_2(ddp_results):
    root, corpus, scenarios, results = ddp_results
    registry = training_registry()
    data = dict(scenarios[0][1])
    data["data"] = {**data["data"], "batch_size": 2}
    single = Trainer(validate_recipe(data, registry), registry=registry, run_dir=root / "single", device="cpu",
                     progress=False).setup()
    initial = {f"param.{k}": v.detach().clone() for k, v in single.codec.named_parameters()}
    single.train()
    ranks = [r["state"] for r in results["global"]]
    # both ranks hold the same weights (DDP) ...
    for key in ranks[0]:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0, msg=key)
    # ... and the same weights as one process seeing the same global batches (float-rounding tolerance)
    reference = {f"param.{k}": v for k, v in single.codec.named_parameters()}
    reference.update({f"disc.{k}": v for k, v in single.discriminator.state_dict().items()})
    for key, value in reference.items():
        torch.testing.assert_close(ranks[0][key], value.detach(), rtol=1e-4, atol=1e-5, msg=key)
    moved = sum(not torch.equal(initial[k], reference[k]) for k in initial)
    assert moved > 0, "training changed no weight: the comparison would prove nothing"
    # logged per-step losses are global means: equal to the single process's
    ddp_log, single_log = read_metrics(root / "global"), read_metrics(root / "single")
    assert sorted(ddp_log) == sorted(single_log) == [1, 2, 3, 4]
    for step in ddp_log:
        for key in ("loss/generator_total", "loss/discriminator", "loss/toy_l1"):
            assert ddp_log[step][key] == pytest.approx(single_log[step][key], rel=1e-4), (step, key)


def test_quantizer_ema_state_is_identical_on_both_ranks(ddp_results):
    _, _, _, results = ddp_results
    a, b = (r["state"] for r in results["ema_vq"])
    buffers = [k for k in a if k.startswith("buffer.acoustic.vq")]
    assert any("embed" in k for k in buffers) and any("cluster_size" in k for k in buffers), buffers
    for key in buffers:
        assert torch.equal(a[key], b[key]), key
    initted = [k for k in buffers if k.endswith("initted")]
    assert initted and all(bool(a[k].all()) for k in initted), "k-means init did not run"
    # the same run without the all-reduce and the loop's broadcast: the check above would have caught the drift
    a, b = (r["state"] for r in results["ema_vq_unsynced"])
    assert any(not torch.equal(a[k], b[k]) for k in buffers)


def test_ranks_with_unequal_batch_counts_stop_together(ddp_results):
    _, _, _, results = ddp_results
    r0, r1 = results["unequal"]
    assert r0["step"] == r1["step"] == 8
    # rank 0 runs out after 3 batches: both ranks start epoch 1 after step 3 and epoch 2 after step 6
    assert r0["epoch"] == r1["epoch"] == 2
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
