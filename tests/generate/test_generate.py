"""The generate stage and the weight loader: errors, caching, Zero123 mode, seeds, outputs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from img2mesh.cli import app
from img2mesh.errors import WeightsError
from img2mesh.generate.architecture import SyncDreamerConfig
from img2mesh.generate.loading import load_syncdreamer, read_state_dict
from img2mesh.utils import cameras

from helpers.data import conformance_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMG2MESH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_state(conformance):
    from safetensors.torch import load_file

    return load_file(conformance / "tiny.safetensors")


def tiny_keys(folder):
    return {k["key"]: k["shape"] for k in json.loads((folder / "tiny_manifest.json").read_text())["keys"]}


def load_tiny(folder, path, **kwargs):
    return load_syncdreamer(SyncDreamerConfig.from_conformance_json(folder / "config.json"), checkpoint=str(path),
                            expected_keys=tiny_keys(folder), **kwargs)


def save_safetensors(state, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_missing_key_is_named(conformance, tiny_state, tmp_path, cache):
    state = dict(tiny_state)
    del state["cc_projection.weight"]
    with pytest.raises(WeightsError, match=r"1 missing \(cc_projection.weight\)"):
        load_tiny(conformance, save_safetensors(state, tmp_path / "m.safetensors"))


def test_wrong_shape_is_named(conformance, tiny_state, tmp_path, cache):
    state = dict(tiny_state)
    state["time_embed.0.bias"] = torch.zeros(7)
    with pytest.raises(WeightsError, match=r"1 wrong shape \(time_embed.0.bias \[7\] != \[256\]\)"):
        load_tiny(conformance, save_safetensors(state, tmp_path / "s.safetensors"))


def test_unexpected_key_is_named(conformance, tiny_state, tmp_path, cache):
    state = dict(tiny_state, **{"model_ema.decay": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"1 unexpected \(model_ema.decay\)"):
        load_tiny(conformance, save_safetensors(state, tmp_path / "u.safetensors"))


def test_truncated_and_foreign_files(conformance, tmp_path, cache):
    data = (conformance / "tiny.ckpt").read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "half.ckpt")
    (tmp_path / "notes.ckpt").write_text("these are not weights " * 20)
    with pytest.raises(WeightsError, match="not a .*PyTorch checkpoint"):
        read_state_dict(tmp_path / "notes.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")
    torch.save({"epoch": torch.zeros(1), "names": ["a"]}, tmp_path / "other.ckpt")
    with pytest.raises(WeightsError, match="holds no state_dict of tensors"):
        read_state_dict(tmp_path / "other.ckpt")


class Payload:
    """Unpickling this runs code; safe loading must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickle_that_safe_loading_refuses_needs_trust(conformance, tiny_state, tmp_path, cache, capsys):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": dict(tiny_state), "hyper_parameters": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(WeightsError, match="--trust-checkpoint"):
        load_tiny(conformance, path)
    model, info = load_tiny(conformance, path, trust=True)
    assert info.converted is not None
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, evil)
    with pytest.raises(WeightsError, match="refuses"):
        read_state_dict(evil)
    assert "unpickled!" not in capsys.readouterr().out


def test_converted_weights_are_cached_and_reused(conformance, cache, monkeypatch):
    _, first = load_tiny(conformance, conformance / "tiny.ckpt")
    assert first.converted and first.sha256 == __import__("hashlib").sha256((conformance / "tiny.ckpt").read_bytes()).hexdigest()

    def fail(*args, **kwargs):
        raise AssertionError("the checkpoint was read again")

    monkeypatch.setattr("img2mesh.generate.loading.read_state_dict", fail)
    _, second = load_tiny(conformance, conformance / "tiny.ckpt")
    assert second.converted == first.converted


def test_hub_unreachable_says_what_to_download(cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        load_syncdreamer("full", hub_sources=["model:nobody/nothing/syncdreamer-pretrain.ckpt"])
    message = str(info.value)
    assert "syncdreamer-pretrain.ckpt" in message and "img2mesh weights download syncdreamer" in message
    assert "--checkpoint" in message and "HF_HUB_OFFLINE" in message


def test_missing_checkpoint_path(cache, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_syncdreamer("tiny", checkpoint=str(tmp_path / "nope.ckpt"))


def test_cameras_match_the_official_table(conformance):
    table = json.loads((conformance / "cameras.json").read_text())
    assert np.allclose(cameras.target_poses(), np.array(table["poses_w2c_3x4"]), atol=1e-6)
    assert np.allclose(cameras.intrinsics(), np.array(table["K"]))
    assert np.allclose(cameras.azimuths(), np.array(table["azimuths_rad"]), atol=1e-6)


def test_zero123_mode_gives_one_view_per_pose():
    from img2mesh.generate.model import Guidance
    from img2mesh.generate.sampler import SamplerSettings, sample_novel_view, seeded_randn

    model, _ = load_syncdreamer("tiny", "random")
    image = torch.zeros(1, 3, 256, 256)
    settings = SamplerSettings(Guidance("cfg", (2.0,)), 2, 1.0, 1, "sample")
    up = sample_novel_view(model, image, 10.0, 0.0, settings, seeded_randn(0, torch.device("cpu")))
    down = sample_novel_view(model, image, -10.0, 0.0, settings, seeded_randn(0, torch.device("cpu")))
    again = sample_novel_view(model, image, 10.0, 0.0, settings, seeded_randn(0, torch.device("cpu")))
    assert up.shape == (1, 4, 32, 32)
    assert torch.equal(up, again) and not torch.allclose(up, down)


TINY = ["--set", "generate.model=tiny", "--set", "generate.random_weights=true", "--set", "generate.steps=2",
        "--set", "generate.guidance=cfg", "--set", "generate.cfg_scale=1.0", "--elevation", "30",
        "--until", "generate", "--device", "cpu", "-q"]


def run_generate(image, out, *extra):
    result = CliRunner().invoke(app, ["run", str(image), "-o", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return out / "generate"


def test_generate_stage_writes_views_grids_and_cameras(tmp_path):
    image = conformance_dir() / "inputs" / "wide.png"
    if not image.is_file():  # a cut-out of our own: an opaque object on a transparent background
        image = tmp_path / "in.png"
        cutout = np.zeros((48, 64, 4), np.uint8)
        cutout[8:40, 10:54] = (200, 30, 30, 255)
        Image.fromarray(cutout).save(image)
    folder = run_generate(image, tmp_path / "a", "--num-samples", "2")
    for k in (0, 1):
        views = sorted(p.name for p in (folder / f"sample_{k}").glob("[0-9][0-9].png"))
        assert views == [f"{i:02d}.png" for i in range(16)]
        assert Image.open(folder / f"sample_{k}" / "00.png").size == (256, 256)
        assert Image.open(folder / f"sample_{k}" / "grid.png").size == (1024, 1024)
        assert Image.open(folder / f"sample_{k}" / "strip.png").size == (4096, 256)
    record = json.loads((folder / "cameras.json").read_text())
    assert len(record["poses"]) == 16 and record["input_elevation_deg"] == 30.0
    assert record["K"][0][0] == 280.0
    info = json.loads((tmp_path / "a" / "img2mesh.json").read_text())["stages"]["generate"]["info"]
    assert info["guidance"] == "cfg" and info["scales"] == [1.0] and info["steps"] == 2
    assert info["seed"] == 0 and info["num_samples"] == 2 and info["weights"]["source"] == "random"
    scores = json.loads((folder / "scores.json").read_text())
    assert [s["sample"] for s in scores["samples"]] == [0, 1] and info["best_sample"] == scores["best_sample"]
    assert all(0.0 <= s[key] <= 1.0 for s in scores["samples"] for key in ("score", "consistency", "input_agreement"))
    assert len(scores["samples"][0]["per_view"]) == 16 and len(info["scores"]) == 2
    assert Image.open(folder / "samples.png").size == (640, 2 * (160 + 18))


@pytest.mark.parametrize("requested, device, free_gib, sets", [
    ("auto", "cpu", None, 1),  # every set costs minutes on a CPU
    ("auto", "cuda", 130.0, 4),  # an H100/H200: as many as HarmonyView's scripts make
    ("auto", "cuda", 20.0, 2),  # a 24 GB card once the weights are in
    ("auto", "cuda", 6.0, 1),  # a small CI runner: still one
    (3, "cuda", 6.0, 3), (2, "cpu", None, 2),  # a number is taken as it is
])
def test_number_of_sample_sets(requested, device, free_gib, sets):
    from img2mesh.generate.runtime import sample_sets

    free = None if free_gib is None else int(free_gib * 2**30)
    assert sample_sets(requested, torch.device(device), free) == sets


def test_same_seed_same_pngs_other_seed_other_pngs(tmp_path):
    image = tmp_path / "in.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    a = run_generate(image, tmp_path / "a", "--seed", "5", "--no-segment")
    b = run_generate(image, tmp_path / "b", "--seed", "5", "--no-segment")
    c = run_generate(image, tmp_path / "c", "--seed", "6", "--no-segment")
    for view in ("00.png", "07.png"):
        assert (a / "sample_0" / view).read_bytes() == (b / "sample_0" / view).read_bytes()
        assert (a / "sample_0" / view).read_bytes() != (c / "sample_0" / view).read_bytes()
    info = json.loads((tmp_path / "a" / "img2mesh.json").read_text())["stages"]["generate"]["info"]
    assert info["num_samples"] == 1 and info["num_samples_setting"] == "auto"  # the default, on the CPU


def test_out_of_memory_halves_batch_views_and_retries(monkeypatch, img2mesh_log):
    from img2mesh.generate.model import Guidance
    from img2mesh.generate.sampler import ViewBatcher

    model, _ = load_syncdreamer("tiny", "random")
    real = model.guided_noise
    calls = []

    def flaky(x_t, *args, **kwargs):
        calls.append(x_t.shape[0])
        if x_t.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x_t, *args, **kwargs)

    monkeypatch.setattr(model, "guided_noise", flaky)
    batcher = ViewBatcher(16)
    x = torch.randn(1, 16, 4, 32, 32)
    with torch.no_grad():
        noise = batcher.noise(model, x, torch.tensor([500]), torch.randn(1, 4, 32, 32), torch.randn(1, 1, 768),
                              model.viewpoint_embedding(torch.tensor([0.5])), Guidance("cfg", (1.0,)))
    assert noise.shape == x.shape
    assert batcher.batch_views == 4 and calls[:3] == [16, 8, 4]
    assert "retrying with batch_views = 4" in img2mesh_log.text
