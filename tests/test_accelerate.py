"""The GPU path: batches from host memory, bf16 autocast kept out of the bottleneck, torch.compile.

Every test runs on the CPU and again on CUDA where a GPU is present (the cuda cases are skipped here).
"""
import pytest
import torch
from torch import nn

from course_lib.engine.accelerate import Accelerate, autocast, fetch, place_data
from course_lib.engine.checkpoints import load_model
from course_lib.engine.training import TrainConfig, train
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import build_tokenizer

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device on this machine"))]


def _tokenizer(preset="vq-f4"):
    torch.manual_seed(0)
    return build_tokenizer(preset, image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0), codebook_size=16)


@pytest.mark.parametrize("device", DEVICES)
def test_batches_from_host_memory_equal_batches_on_the_device(device):
    data = (torch.randn(40, 3, 4, 4), torch.arange(40))
    indices = torch.tensor([3, 0, 17, 39])
    kept_on_host = place_data(data, torch.device(device), Accelerate(device_data_gb=0.0))
    moved = place_data(data, torch.device(device), Accelerate())
    assert moved[0].device.type == device
    if device == "cuda":
        assert kept_on_host[0].device.type == "cpu" and kept_on_host[0].is_pinned()
    for tensors in (kept_on_host, moved):
        batch = fetch(tensors, indices, torch.device(device))
        assert all(b.device.type == device for b in batch)
        assert torch.equal(batch[0].cpu(), data[0][indices]) and torch.equal(batch[1].cpu(), data[1][indices])


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_is_bf16_on_cuda_only(device):
    a = torch.randn(8, 8, device=device)
    with autocast(torch.device(device), Accelerate()):
        product = a @ a
    assert product.dtype == (torch.bfloat16 if device == "cuda" else torch.float32)
    with autocast(torch.device(device), Accelerate(bf16=False)):
        assert (a @ a).dtype == torch.float32


@pytest.mark.parametrize("preset", ["vq-f4", "fsq-f4", "kl-f4"])
@pytest.mark.parametrize("device", DEVICES)
def test_the_bottleneck_runs_in_float32_under_bf16_autocast(device, preset, one_thread):
    torch.manual_seed(0)
    model = build_tokenizer(preset, image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0)).to(device).train()
    seen, bottleneck = [], model._bottleneck

    def spy(z, generator):
        seen.append(z.dtype)
        return bottleneck(z, generator)
    model._bottleneck = spy
    with torch.autocast(device, dtype=torch.bfloat16):  # forced here, on the cpu too
        out = model(torch.rand(4, 3, 16, 16, device=device))
    assert seen == [torch.float32]  # the encoder's convolutions ran in bf16; the bottleneck got float32
    assert all(v.dtype == torch.float32 for v in out.losses.values()), {k: v.dtype for k, v in out.losses.items()}
    assert torch.isfinite(out.reconstruction).all()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = None
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x, y):
        return ((self.net(x).squeeze(-1) - y) ** 2).mean()


@pytest.mark.parametrize("device", DEVICES)
def test_a_compiled_model_trains_like_the_eager_one(device, one_thread):
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    data, config = (x, x.sum(1)), TrainConfig(steps=5, batch_size=8, warmup=1)
    models = []
    for accelerate in (Accelerate(bf16=False), Accelerate(bf16=False, compile=True, compile_backend="eager")):
        torch.manual_seed(0)
        models.append(Tiny())
        train(models[-1], data, config, device=device, progress=False, accelerate=accelerate)
    eager, compiled = (m.state_dict() for m in models)
    assert eager.keys() == compiled.keys()  # the saved model is never the compiled wrapper (no _orig_mod.)
    assert all(torch.allclose(eager[k], compiled[k], atol=1e-6) for k in eager)


@pytest.mark.parametrize("device", DEVICES)
def test_a_tokenizer_trains_on_the_device_and_its_checkpoint_loads_on_the_cpu(device, tmp_path, one_thread):
    model = _tokenizer()
    images = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = train(model, images, TrainConfig(steps=3, batch_size=4, warmup=1), loss_fn=TokenizerLoss(),
                   checkpoint=tmp_path / "vq.pt", device=device, progress=False)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    assert next(model.parameters()).device.type == device
    restored = load_model(tmp_path / "vq.pt")  # on the cpu
    trained = model.cpu().state_dict()
    assert all(torch.equal(trained[k], v) for k, v in restored.state_dict().items())


def test_accelerate_rejects_unknown_backends():
    with pytest.raises(ValueError, match="choose one of"):
        Accelerate(compile_backend="tensorrt")
