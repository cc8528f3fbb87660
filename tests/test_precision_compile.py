"""Mixed precision and torch.compile on the CPU: the bf16 autocast path of the loop, and the ``train.compile``
switch (compiled DAC blocks and T-UNet match eager). The CUDA counterparts are in tests/test_cuda.py."""

from __future__ import annotations

import math

import pytest
import torch

from codecfw.core.config import load_recipe, validate_recipe
from codecfw.core.training.trainer import Trainer, compile_marked_modules

from .training_support import make_corpus, toy_recipe, training_registry

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), corrupt=False)


def _first_step(corpus, run_dir, precision: str, objective: str = "adversarial"):
    registry = training_registry()
    trainer = Trainer(validate_recipe(toy_recipe(corpus, objective=objective, precision=precision, seed=5), registry),
                      registry=registry, run_dir=run_dir, device="cpu", progress=False).setup()
    dtypes = []
    conv = trainer.codec.semantic.conv
    conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer._data = trainer._start_epoch()
    batch = trainer._next_batch()
    torch.manual_seed(11)
    stats = trainer.train_step([batch])
    trainer.close()
    return trainer, float(stats["loss/generator_total"]), dtypes


@pytest.mark.parametrize("objective", ["adversarial", "diffusion"])
def test_bf16_autocast_training_step_on_cpu(corpus, tmp_path, objective):
    ref, fp32_loss, fp32_dtypes = _first_step(corpus, tmp_path / "fp32", "fp32", objective)
    trainer, bf16_loss, bf16_dtypes = _first_step(corpus, tmp_path / "bf16", "bf16", objective)
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()
    assert fp32_dtypes and set(fp32_dtypes) == {torch.float32}
    assert bf16_dtypes and set(bf16_dtypes) == {torch.bfloat16}  # the convolutions ran in bf16
    assert math.isfinite(bf16_loss) and bf16_loss == pytest.approx(fp32_loss, rel=0.05)
    # master weights stay float32 and moved like the fp32 run's
    for (name, p), q in zip(trainer.codec.named_parameters(), ref.codec.parameters()):
        assert p.dtype == torch.float32, name
        torch.testing.assert_close(p, q, rtol=0.05, atol=2e-3, msg=name)


def test_fp16_needs_cuda_and_runs_fp32_on_cpu(corpus, tmp_path):
    trainer, loss, dtypes = _first_step(corpus, tmp_path / "fp16", "fp16")
    assert trainer.amp_dtype is None and set(dtypes) == {torch.float32} and math.isfinite(loss)


def _dac_pair():
    from codecfw.plugins.nn.dac import DACDecoder, DACEncoder

    return torch.nn.Sequential(DACEncoder(4, (2, 2), 8), DACDecoder(8, 16, (2, 2)))


def _compiled_matches_eager(backend: str = "inductor", device: str = "cpu", grad_rtol: float = 1e-4,
                            atol: float = 1e-6) -> None:
    """Compiled DAC blocks give the eager outputs and gradients, and keep their checkpoint names (tests/test_cuda.py
    runs this on CUDA)."""
    torch.manual_seed(0)
    eager, compiled = _dac_pair().to(device), _dac_pair().to(device)
    compiled.load_state_dict(eager.state_dict())
    assert compile_marked_modules(compiled, backend) == ["0", "1"]
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their names
    x = torch.randn(2, 1, 64, device=device)
    y_compiled, y_eager = compiled(x), eager(x)
    torch.testing.assert_close(y_compiled, y_eager, rtol=1e-4, atol=atol)
    y_compiled.square().mean().backward()
    y_eager.square().mean().backward()
    for a, b in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=grad_rtol, atol=atol)


def test_compiled_dac_blocks_match_eager_aot_autograd():
    # aot_eager: dynamo's graph capture and AOTAutograd's forward/backward graphs, without a C compiler
    _compiled_matches_eager("aot_eager")


@pytest.mark.slow
def test_compiled_dac_blocks_match_eager_inductor():
    # inductor's C++ code generation (about 2 minutes of compilation on the 2-core machine)
    _compiled_matches_eager("inductor")


def test_train_compile_switch_compiles_marked_modules(corpus, tmp_path, monkeypatch):
    from . import toy_codec

    monkeypatch.setattr(toy_codec.ToyDecoder, "compile_target", True, raising=False)
    registry = training_registry()
    trainer = Trainer(validate_recipe(toy_recipe(corpus, compile=True, compile_backend="eager"), registry),
                      registry=registry, run_dir=tmp_path, device="cpu", progress=False).setup()
    compiled = {name for name, m in trainer.codec.named_modules() if getattr(m, "_compiled_call_impl", None)}
    assert compiled == {"decoder"}
    trainer._data = trainer._start_epoch()
    stats = trainer.train_step([trainer._next_batch()])
    assert math.isfinite(float(stats["loss/generator_total"]))
    trainer.close()


@pytest.mark.slow
def test_train_compile_switch_compiles_the_dac_blocks_of_xcodec(tmp_path):
    overrides = ["train.compile=true", "train.compile_backend=eager", "data.train=null", "data.valid=null"]
    assert load_recipe("xcodec_tiny").train.compile is False  # off by default
    recipe = load_recipe("xcodec_tiny", overrides)
    y = [{"waveform": 0.1 * torch.randn(2, 1, 3200)}]
    trainer = Trainer(recipe, run_dir=tmp_path, device="cpu", progress=False, train_loader=y).setup()
    compiled = {name for name, m in trainer.codec.named_modules() if getattr(m, "_compiled_call_impl", None)}
    assert compiled == {"acoustic.encoder", "decoder.generator"}
    stats = trainer.train_step(y)
    assert math.isfinite(float(stats["loss/generator_total"]))
    trainer.close()


@pytest.mark.slow
def test_compiled_t_unet_matches_eager():
    from codecfw.plugins.decoder.t_unet import TUNet2DConditionModel

    kw = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
              num_head_channels=16, context_dim=12)
    torch.manual_seed(0)
    eager, compiled = TUNet2DConditionModel(**kw), TUNet2DConditionModel(**kw)
    compiled.load_state_dict(eager.state_dict())
    holder = torch.nn.ModuleDict({"unet": compiled})
    assert compile_marked_modules(holder, "aot_eager") == ["unet"]
    z, t, ctx = torch.randn(2, 8, 16, 16), torch.tensor([10, 500]), torch.randn(2, 6, 12)
    torch.testing.assert_close(compiled(z, t, encoder_hidden_states=ctx).sample,
                               eager(z, t, encoder_hidden_states=ctx).sample, rtol=1e-4, atol=1e-5)
