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
        "-q", "--set", "enhance.enabled=true", "--set", "sd2_depth.model=tiny", "--set", "sd2_depth.random_weights=true",
        "--set", "enhance.steps=4", "--set", "enhance.inversion_steps=3",
        "--set", "enhance.start_step=1", "--set", "sd2_depth.start_layer=1", "--preset", "smoke",
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
    assert Image.open(folder / "00.png").size == (64, 64)  # the tiny model's size (auto), not generate's 256
    coarse = np.asarray(Image.open(out / "generate" / "sample_0" / "00.png").convert("RGB").resize((64, 64), Image.BICUBIC))
    enhanced = np.asarray(Image.open(folder / "00.png"))
    background = (coarse.astype(np.float32) / 255 >= 0.93).all(-1)  # the coarse view's white background
    assert (enhanced[background] == 255).all() and (enhanced[~background] != 255).any()  # on white in its mask
    reference = np.asarray(Image.open(out / "enhance" / "reference.png"))
    assert reference.shape == (64, 64, 3)
    assert Image.open(folder / "depth" / "07.png").size == (8, 8)  # the depth condition, at the latent's size
    assert Image.open(folder / "strip.png").size == (16 * 128, 2 * 128)  # before / after
    cameras = json.loads((out / "enhance" / "cameras.json").read_text())
    generated = json.loads((out / "generate" / "cameras.json").read_text())
    assert cameras["image_size"] == 64 and cameras["K"][0][0] == pytest.approx(generated["K"][0][0] / 4)
    assert cameras["poses"] == generated["poses"]
    info = stages["enhance"]["info"]
    assert info["sets"] == [0] and info["inversion_steps"] == 3 and info["precision"] == "float32"
    assert info["image_size"] == 64 and info["guidance"] == 9.0 and info["prompt"]
    assert stages["reconstruct"]["info"]["enhanced"] and stages["reconstruct"]["info"]["view_size"] == [64, 64]
    assert (out / "mesh.glb").is_file()
    again = run(image, out, "--set", "sd2_depth.start_layer=0")
    ran_again = {name for name in again if again[name]["ended"] != stages[name]["ended"]}
    assert ran_again == {"enhance", "reconstruct", "mesh"}


def test_the_depth_condition_puts_the_background_strictly_behind_the_object():
    import torch

    from img2mesh.hifi123.components import normalise_depth

    inverse = torch.rand(2, 1, 8, 8) + 0.5
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6, 2:6] = True
    out = normalise_depth(inverse, mask)
    inside, outside = out[mask], out[~mask]
    assert (outside == -1).all() and inside.min() > -1 + 0.1 and inside.max() == pytest.approx(1.0)
    nearest = inverse[0][mask[0]].argmax()
    assert out[0][mask[0]][nearest] == pytest.approx(1.0)  # the nearest pixel (largest inverse depth) at 1


def test_the_reference_is_the_full_resolution_photo_framed_as_the_input(tmp_path):
    """The reference at 512² comes from the cut-out at its own resolution with the 256² input's framing:
    its object spans the same fraction of the frame, with more pixels than the input upscaled."""
    from img2mesh.segment.recentre import framed_photo, recentre

    rgba = np.zeros((900, 700, 4), np.uint8)
    rgba[100:800, 150:550, :3] = np.random.default_rng(0).integers(0, 255, (700, 400, 3))
    rgba[100:800, 150:550, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    photo, mask = framed_photo(tmp_path, 200, 512)
    small = np.asarray(recentre(Image.fromarray(rgba), 200).rgba)[..., 3] > 127
    rows, cols = np.nonzero(mask)
    small_rows, small_cols = np.nonzero(small)
    assert photo.shape == (512, 512, 3) and rows.max() - rows.min() + 1 == pytest.approx(2 * (np.ptp(small_rows) + 1), abs=2)
    assert cols.mean() == pytest.approx(2 * small_cols.mean(), abs=2)  # the same framing, twice the pixels
    assert len(np.unique(photo[mask].reshape(-1, 3), axis=0)) > 5000  # the photo's own detail, not a blown-up 256²


def test_switched_off_its_settings_change_nothing_downstream():
    from img2mesh.app import load_config
    from img2mesh.enhance.stage import STAGE
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
    from img2mesh.app import get_weight

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
    assert "unet/diffusion_pytorch_model.safetensors" in message and "sd2_depth.hub_repo" in message


def test_out_of_memory_halves_the_pairs_per_call_and_retries(monkeypatch, img2mesh_log):
    import logging
    from types import SimpleNamespace

    import torch

    from img2mesh.app import load_config
    from img2mesh.enhance import stage

    calls = []

    def flaky(unet, alphas, reference, novel, *args, **kwargs):
        calls.append(novel.shape[0])
        if novel.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return novel + 1, None

    monkeypatch.setattr("img2mesh.hifi123.rgnv.enhance_latents", flaky)
    model = SimpleNamespace(unet=SimpleNamespace(device="cpu"), alphas_cumprod=torch.ones(10), decode=lambda z: z * 2,
                            v_prediction=False)
    ctx = SimpleNamespace(config=load_config(overrides=["enhance.batch_views=4"]), log=logging.getLogger("img2mesh"))
    views = {"latents": torch.arange(5.0).view(5, 1, 1, 1), "depth": torch.zeros(5, 1, 1, 1)}
    advanced = []
    conditions = SimpleNamespace(text=torch.zeros(1, 2, 4), uncond=None)
    out = stage.enhance_in_chunks(ctx, model, None, conditions, views, SimpleNamespace(advance=advanced.append))
    assert calls == [4, 2, 1, 1, 1, 1, 1] and sum(advanced) == 5  # 4 -> 2 -> 1, then one at a time
    assert torch.equal(out.flatten(), (torch.arange(5.0) + 1) * 2)  # every view once, in order
    assert "retrying with enhance.batch_views = 1" in img2mesh_log.text


def test_the_views_are_masked_as_reconstruct_masks_them():
    """enhance takes the mask maker reconstruct uses (the remover when its weights are here): a near-white
    part at the silhouette that the white threshold erases stays when the remover keeps it."""
    from img2mesh.enhance.stage import views_masks

    view = np.full((32, 32, 3), 255, np.uint8)
    view[8:24, 8:24] = (120, 60, 40)
    view[8:24, 20:24] = (250, 248, 245)  # a near-white band at the object's edge
    remover = lambda images: (np.stack([np.pad(np.ones((16, 16)), 8) for _ in images]), "remover")  # noqa: E731
    masks, source = views_masks(remover, [view], 64)
    assert source == "remover" and masks.shape == (1, 64, 64)
    assert masks[0, 16:48, 40:48].all()  # the band, at the enhanced size, is kept
    from img2mesh.reconstruct.views import threshold_masks

    thresholded, _ = views_masks(threshold_masks, [view], 64)
    assert not thresholded[0, 16:48, 42:46].any()  # what the threshold alone would have done
