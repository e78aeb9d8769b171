"""Reduced precision on the CPU: the CUDA autocast policy, emulated, over the tiny model's whole sampling.

Before the fix, the sampler under CUDA autocast crashed at the first step (``linalg.inv: Low
precision dtypes not supported. Got Half``): the frustum geometry's projection matrix came out of a
float16 matmul and went to ``torch.inverse``. CPU autocast has a float32 rule for ``inverse``, so no
CPU test saw it; ``helpers.autocast`` emulates the CUDA policy instead and these tests fail on that code.

Tolerances, against float32 on the same weights (random tiny ones) and seed, 2 DDIM steps:
max |reduced - fp32| / max |fp32| of the final latents <= 1e-2 in float16 and <= 6e-2 in bfloat16
(measured 1.4e-3 / 2.3e-3 and 1.4e-2 / 2.4e-2 for cfg / harmony); the decoded uint8 views within
4 levels and 0.5 on average in float16 (measured 1-2, 0.06-0.09), 40 and 2.0 in bfloat16 (measured
8-18, 0.44-0.70: bfloat16 keeps 8 bits of mantissa).
"""

from __future__ import annotations

import copy

import pytest
import torch

from img2mesh.generate.loading import load_syncdreamer
from img2mesh.generate.model import Guidance
from img2mesh.generate.precision import Precision
from img2mesh.generate.sampler import SamplerSettings, decode_views, sample_latents, seeded_randn

from helpers.autocast import EmulatedCudaPrecision

STEPS = 2
GUIDANCES = {"cfg": Guidance("cfg", (2.0,)), "harmony": Guidance("harmony", (2.0, 1.0))}
TOLERANCE = {torch.float16: (1e-2, (4, 0.5)), torch.bfloat16: (6e-2, (40, 2.0))}
CPU = torch.device("cpu")


def settings_for(guidance: Guidance) -> SamplerSettings:
    return SamplerSettings(guidance, STEPS, 1.0, 16, "sample")


@pytest.fixture(scope="module")
def model():
    network, _ = load_syncdreamer("tiny", "random")
    return network.requires_grad_(False)


@pytest.fixture(scope="module")
def image():
    generator = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, 256, 256, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def float32_latents(model, image):
    return {name: sample_latents(model, image, torch.tensor([0.5]), settings_for(guidance),
                                 seeded_randn(0, CPU)) for name, guidance in GUIDANCES.items()}


def outside_every_region(module: torch.nn.Module, seen: list) -> None:
    """Record, at every forward of ``module``, whether an emulated autocast region is active."""
    module.register_forward_pre_hook(lambda *_: seen.append(torch._C._len_torch_function_stack() > 0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("guidance", list(GUIDANCES))
def test_whole_sampling_under_cuda_autocast_policy_matches_float32(model, image, float32_latents, guidance, dtype):
    reduced = copy.deepcopy(model)
    precision = EmulatedCudaPrecision("cpu", dtype)
    precision.prepare(reduced)
    in_region: list[bool] = []
    outside_every_region(reduced.vae, in_region)
    outside_every_region(reduced.clip, in_region)
    latents = sample_latents(reduced, image, torch.tensor([0.5]), settings_for(GUIDANCES[guidance]),
                             seeded_randn(0, CPU), precision=precision)
    counts = precision.counts()
    assert counts["lower"] > 1000 and counts["float32"] > 100  # the policy really acted on the denoiser
    assert in_region and not any(in_region)  # VAE and CLIP ran, never inside the reduced region
    reference = float32_latents[guidance]
    assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
    relative, levels = TOLERANCE[dtype]
    error = ((latents - reference).abs().max() / reference.abs().max()).item()
    assert error <= relative, f"{dtype}: relative error {error:.2e} > {relative}"
    views = decode_views(reduced, latents).int() - decode_views(model, reference).int()
    assert views.abs().max().item() <= levels[0] and views.abs().float().mean().item() <= levels[1]


def test_precision_for_a_run():
    assert Precision.for_run("auto", "cpu").dtype is None  # the CPU is always float32
    assert Precision.for_run("fp16", "cpu").dtype is None
    assert Precision.for_run("auto", "cuda:0").dtype == torch.float16
    assert Precision.for_run("bf16", "cuda").dtype == torch.bfloat16
    assert Precision.for_run("fp32", "cuda:1").dtype is None
    assert Precision.for_run("bf16", "cuda").name == "bfloat16" and Precision().name == "float32"


def test_prepare_casts_the_denoiser_only_and_freezes_everything(model):
    reduced = copy.deepcopy(model).requires_grad_(True)
    Precision("cuda", torch.float16).prepare(reduced)
    assert not any(p.requires_grad for p in reduced.parameters())
    for part in (reduced.unet, reduced.spatial_volume):
        assert {p.dtype for p in part.parameters()} == {torch.float16}
    for part in (reduced.vae, reduced.clip, reduced.time_embed, reduced.cc_projection):
        assert {p.dtype for p in part.parameters()} == {torch.float32}
    assert reduced.poses.dtype == torch.float32 and reduced.Ks.dtype == torch.float32  # cameras stay exact


def test_camera_geometry_is_float32_computed_once(model):
    volume = model.spatial_volume
    first = volume.camera_geometry(model.poses, model.Ks)
    assert first.warp.dtype == first.frustum.dtype == torch.float32
    assert volume.camera_geometry(model.poses, model.Ks) is first  # the 16 cameras are constants
    other = volume.camera_geometry(model.poses.clone(), model.Ks)
    assert other is not first and torch.equal(other.frustum, first.frustum)


@pytest.fixture(scope="module")
def full_model():
    network, _ = load_syncdreamer("full", "random")
    return network.requires_grad_(False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("size", ["tiny", "full"])
def test_cuda_autocast_sampling_matches_float32(request, monkeypatch, size, dtype, image):
    """The real thing on a GPU, both guidance kinds: the same bounds as the emulation for the tiny
    model; twice them for the full-size one (random weights, 1.4 G parameters)."""
    cuda = torch.device("cuda")
    base = request.getfixturevalue("model" if size == "tiny" else "full_model")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # a float32 reference, not TF32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    relative, levels = TOLERANCE[dtype]
    scale = 1 if size == "tiny" else 2
    precision = Precision("cuda", dtype)
    for guidance in GUIDANCES.values():
        reference_model = copy.deepcopy(base).to(cuda)
        settings = settings_for(guidance)
        reference = sample_latents(reference_model, image.to(cuda), torch.tensor([0.5], device=cuda), settings,
                                   seeded_randn(0, cuda))
        reference_views = decode_views(reference_model, reference).int()
        del reference_model
        reduced = precision.prepare(copy.deepcopy(base)).to(cuda)
        latents = sample_latents(reduced, image.to(cuda), torch.tensor([0.5], device=cuda), settings,
                                 seeded_randn(0, cuda), precision=precision)
        assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
        error = ((latents - reference).abs().max() / reference.abs().max()).item()
        assert error <= scale * relative, f"{size} {guidance.kind} {dtype}: relative error {error:.2e}"
        views = decode_views(reduced, latents).int() - reference_views
        assert views.abs().float().mean().item() <= scale * levels[1]
        del reduced
        torch.cuda.empty_cache()
