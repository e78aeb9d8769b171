"""The enhance stage end to end with tiny random SD-2-depth parts: its outputs, reconstruct reading
them, what re-runs when a key changes, and the errors a user can meet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from img2mesh.cli import app
from img2mesh.errors import WeightsError

TINY = ["--set", "generate.model=tiny", "--set", "generate.random_weights=true", "--set", "generate.steps=2",
        "--set", "generate.guidance=cfg", "--set", "generate.cfg_scale=1.0", "--elevation", "30", "--device", "cpu",
        "-q", "--set", "enhance.enabled=true", "--set", "enhance.model=tiny", "--set", "enhance.random_weights=true",
        "--set", "enhance.image_size=64", "--set", "enhance.steps=4", "--set", "enhance.inversion_steps=3",
        "--set", "enhance.start_step=1", "--set", "enhance.start_layer=1", "--preset", "smoke",
        "--set", "reconstruct.steps=4", "--set", "reconstruct.rays_per_step=64", "--set", "reconstruct.init_steps=5",
        "--set", "reconstruct.image_size=0", "--set", "mesh.resolution=32", "--set", "mesh.texture=false"]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in.png"
    cutout = np.zeros((48, 48, 4), np.uint8)
    cutout[8:40, 12:36] = (200, 30, 30, 255)
    Image.fromarray(cutout).save(path)
    return path


def run(image, out, *extra):
    result = CliRunner().invoke(app, ["run", str(image), "-o", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "img2mesh.json").read_text())["stages"]


def test_enhanced_views_are_written_read_by_reconstruct_and_rerun_alone_when_a_key_changes(image, tmp_path):
    out = tmp_path / "out"
    stages = run(image, out)
    folder = out / "enhance" / "sample_0"
    assert sorted(p.name for p in folder.glob("[0-9][0-9].png")) == [f"{n:02d}.png" for n in range(16)]
    assert Image.open(folder / "00.png").size == (64, 64)  # the model's size, not generate's 256
    assert Image.open(folder / "depth" / "07.png").size == (8, 8)  # the depth condition, at the latent's size
    assert Image.open(folder / "strip.png").size == (16 * 128, 2 * 128)  # before / after
    cameras = json.loads((out / "enhance" / "cameras.json").read_text())
    generated = json.loads((out / "generate" / "cameras.json").read_text())
    assert cameras["image_size"] == 64 and cameras["K"][0][0] == pytest.approx(generated["K"][0][0] / 4)
    assert cameras["poses"] == generated["poses"]
    info = stages["enhance"]["info"]
    assert info["sets"] == [0] and info["inversion_steps"] == 3 and info["precision"] == "float32"
    assert stages["reconstruct"]["info"]["enhanced"] and stages["reconstruct"]["info"]["view_size"] == [64, 64]
    assert (out / "mesh.glb").is_file()
    again = run(image, out, "--set", "enhance.start_layer=0")
    ran_again = {name for name in again if again[name]["ended"] != stages[name]["ended"]}
    assert ran_again == {"enhance", "reconstruct", "mesh"}


def test_switched_off_its_settings_change_nothing_downstream():
    from img2mesh.enhance.stage import STAGE
    from img2mesh.pipeline.config import load_config
    from img2mesh.pipeline.runner import stage_fingerprint

    def fingerprint(*overrides):
        return stage_fingerprint(STAGE, "input", load_config(overrides=list(overrides)), {"segment": "s", "generate": "g"})

    assert fingerprint() == fingerprint("enhance.steps=20", "enhance.prompt=a vase")
    on = ("enhance.enabled=true",)
    assert fingerprint(*on) != fingerprint() and fingerprint(*on) != fingerprint(*on, "enhance.steps=20")


def test_inversion_longer_than_the_schedule_is_one_line(image, tmp_path):
    result = CliRunner().invoke(app, ["run", str(image), "-o", str(tmp_path / "o"), *TINY,
                                      "--set", "enhance.inversion_steps=9"])
    assert result.exit_code == 2 and "enhance.inversion_steps" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_missing_sd2_depth_offline_names_the_repository_and_the_command(tmp_path, monkeypatch):
    from img2mesh.utils.weights import get_weight

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    weight = get_weight("sd2_depth")
    assert weight.locate() is None
    with pytest.raises(WeightsError) as caught:
        weight.download()
    message = str(caught.value)
    assert "stabilityai/stable-diffusion-2-depth" in message and "img2mesh weights download sd2_depth" in message
    assert "unet/diffusion_pytorch_model.safetensors" in message and "enhance.hub_repo" in message


def test_out_of_memory_halves_the_pairs_per_call_and_retries(monkeypatch, img2mesh_log):
    import logging
    from types import SimpleNamespace

    import torch

    from img2mesh.enhance import stage
    from img2mesh.pipeline.config import load_config

    calls = []

    def flaky(unet, alphas, reference, novel, *args, **kwargs):
        calls.append(novel.shape[0])
        if novel.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return novel + 1, None

    monkeypatch.setattr("img2mesh.enhance.rgnv.enhance_latents", flaky)
    model = SimpleNamespace(embed_text=lambda prompt: torch.zeros(1, 2, 4), unet=SimpleNamespace(device="cpu"),
                            alphas_cumprod=torch.ones(10), decode=lambda z: z * 2, v_prediction=False)
    ctx = SimpleNamespace(config=load_config(overrides=["enhance.batch_views=4"]), log=logging.getLogger("img2mesh"))
    views = {"latents": torch.arange(5.0).view(5, 1, 1, 1), "depth": torch.zeros(5, 1, 1, 1)}
    advanced = []
    out = stage.enhance_in_chunks(ctx, model, {"latents": None, "depth": None}, views,
                                  SimpleNamespace(advance=advanced.append))
    assert calls == [4, 2, 1, 1, 1, 1, 1] and sum(advanced) == 5  # 4 -> 2 -> 1, then one at a time
    assert torch.equal(out.flatten(), (torch.arange(5.0) + 1) * 2)  # every view once, in order
    assert "retrying with enhance.batch_views = 1" in img2mesh_log.text
