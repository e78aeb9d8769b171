"""The refine stage (HiFi-123's RGSD) with tiny random SD-2-depth parts: the differentiable texture
render, the loss, what the gradient reaches, the reference computed once, resume, and that a run
without refine makes what it made before."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from img2mesh.hifi123.components import tiny_sd2_depth
from img2mesh.hifi123.distillation import distillation_loss, latent_of
from img2mesh.hifi123.rgnv import RGNVSettings, prepare_reference
from img2mesh.mesh.texture import sample_texture, texture_mesh
from img2mesh.refine.render import TexturedMesh, camera_pool, rasterise, render
from img2mesh.refine.rgsd import RGSDSettings, Scene, TextureRefiner
from img2mesh.utils import cameras

from helpers.stages import snapshot

CPU = torch.device("cpu")
SIZE = 64  # the tiny model's images
RGNV = RGNVSettings(steps=6, inversion_steps=3, start_step=0, start_layer=1, guidance=2.0)


def position_colour(points: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(points) + 0.5, 0, 1)


@pytest.fixture(scope="module")
def toy():
    """A textured sphere (its texture: colour = position) and the tiny model."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.35)
    textured, _ = texture_mesh(sphere, 64, position_colour, CPU)
    mesh = TexturedMesh(np.asarray(textured.vertices), np.asarray(textured.faces), np.asarray(textured.visual.uv),
                        np.asarray(textured.visual.material.baseColorTexture.convert("RGB")))
    return mesh, tiny_sd2_depth()


def scene_for(mesh, model, targets=True, photo_texture=None):
    from img2mesh.hifi123.runtime import prompts

    K = cameras.intrinsics(SIZE)
    pool = [rasterise(mesh, k, pose, SIZE, CPU) for k, pose in camera_pool(3, SIZE, 0)]
    fixed = [rasterise(mesh, K, cameras.target_poses()[v], SIZE, CPU) for v in (0, 8)]
    photo_camera = rasterise(mesh, K, cameras.look_at_pose(0.0, math.radians(30)), SIZE, CPU)
    truth = torch.full((1, 3, 64, 64), 0.8) if photo_texture is None else photo_texture
    photo = render(truth, photo_camera).detach()
    conditions = prompts(model, "a photo of the object", RGNV.guidance)
    branch = prepare_reference(model.unet, model.alphas_cumprod, latent_of(model, photo, grad=False), torch.zeros(
        1, 1, SIZE // model.vae_factor, SIZE // model.vae_factor), conditions.reference, RGNV)
    stored = torch.randn(2, 4, SIZE // model.vae_factor, SIZE // model.vae_factor, generator=torch.Generator()
                         .manual_seed(1)) if targets else None
    return Scene(pool, fixed, stored, photo_camera, photo, branch, conditions)


def test_the_render_samples_the_texture_as_the_mesh_stage_does(toy):
    """At covered pixels the render is the bilinear texel lookup of ``mesh.texture.sample_texture``;
    elsewhere white."""
    mesh, _ = toy
    raster = rasterise(mesh, cameras.intrinsics(SIZE), cameras.target_poses()[3], SIZE, CPU)
    texture = torch.from_numpy(np.array(mesh.texture)).float().div(255).permute(2, 0, 1)[None]
    image = render(texture, raster)[0].permute(1, 2, 0).numpy()
    covered = raster.mask.numpy()
    uv = torch.stack([(raster.grid[..., 0] + 1) / 2, 1 - (raster.grid[..., 1] + 1) / 2], -1).numpy()[covered]
    expected = sample_texture(mesh.texture, uv.astype(np.float64)) / 255
    assert covered.mean() > 0.2 and np.abs(image[covered] - expected).max() < 1e-4
    assert (image[~covered] == 1.0).all()


def test_tau_zero_with_the_stored_target_is_an_l2_between_latents():
    z0, target, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    assert torch.allclose(distillation_loss(z0, target, noise, torch.tensor(1.0)), ((z0 - target) ** 2).mean())
    alpha = torch.tensor(0.3)  # at a noisier level: ᾱ ‖z₀ − x̂₀‖² with x̃ = √ᾱ x̂₀ + √(1−ᾱ) ε̃
    x0 = torch.randn(1, 4, 8, 8)
    x_tau = alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise
    assert torch.allclose(distillation_loss(z0, x_tau, noise, alpha), alpha * ((z0 - x0) ** 2).mean(), atol=1e-6)


def test_a_fixed_iteration_is_the_latent_l2_to_its_stored_target(toy):
    mesh, model = toy
    scene = scene_for(mesh, model)
    refiner = TextureRefiner(mesh.texture, RGSDSettings(2, 0.01, 0.0, True, 100, 0), CPU)
    expected = ((latent_of(model, render(refiner.texture, scene.fixed[0]), grad=False) - scene.targets[:1]) ** 2).mean()
    facts = refiner.step(model, scene, RGNV)  # iteration 0: the first fixed camera, τ = 0
    assert facts["stop"] == 0.0 and facts["camera"] == 0.0
    assert facts["distillation"] == pytest.approx(float(expected), rel=1e-5)


def test_the_gradient_reaches_the_texture_and_nothing_else(toy):
    """One random-camera iteration (inversion, injected denoising to τ, x_τ(θ)): the texels the camera
    sees change, the networks hold no gradient and did not move, the geometry is not a parameter."""
    mesh, model = toy
    scene = scene_for(mesh, model)
    weights = {k: v.clone() for k, v in model.vae.state_dict().items()}
    refiner = TextureRefiner(mesh.texture, RGSDSettings(2, 0.05, 0.0, True, 100, 0), CPU)
    refiner.iteration = 1  # an odd iteration: a random camera
    before = refiner.texture.detach().clone()
    facts = refiner.step(model, scene, RGNV)
    assert facts["distillation"] > 0 and refiner.texture.grad is not None and refiner.texture.grad.abs().sum() > 0
    assert (refiner.texture.detach() != before).any()
    for net in (model.unet, model.vae, model.text_encoder):
        assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(weights[k], v) for k, v in model.vae.state_dict().items())
    assert [p is refiner.texture for group in refiner.optimizer.param_groups for p in group["params"]] == [True]


def test_the_loss_decreases_over_iterations_on_a_toy_scene(toy):
    """Fixed cameras whose stored targets a texture can reach (the latents of a grey object's renders,
    the photo's grey) and the photo's loss, 40 iterations: the later iterations' mean loss is below
    the first ones'."""
    mesh, model = toy
    scene = scene_for(mesh, model)
    grey = torch.full((1, 3, 64, 64), 0.8)
    scene.targets = torch.cat([latent_of(model, render(grey, raster), grad=False) for raster in scene.fixed])
    refiner = TextureRefiner(mesh.texture, RGSDSettings(40, 0.05, 1.0, True, 100, 0), CPU)
    refiner.run(model, scene, RGNV)
    losses = [h["loss"] for h in refiner.history[::2]]  # the fixed-camera iterations
    assert len(losses) == 20 and all(h["stop"] == 0.0 for h in refiner.history[::2])
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_the_photos_loss_alone_brings_the_texture_to_the_photo(toy):
    """Without distillation (the mechanics benchmark's switch) the render at the input camera moves to
    the photo; no model is needed."""
    mesh, model = toy
    truth = torch.zeros(1, 3, 64, 64)
    truth[:, 0] = 0.9  # the photo: a red object
    scene = scene_for(mesh, model, targets=False, photo_texture=truth)
    refiner = TextureRefiner(mesh.texture, RGSDSettings(60, 0.05, 1.0, False, 100, 0), CPU)
    first = refiner.step(None, scene, None)["photo"]
    refiner.run(None, scene, None)
    assert refiner.history[-1]["photo"] < 0.2 * first
    assert all("distillation" not in h for h in refiner.history)


def test_an_interrupted_refinement_resumes_where_its_checkpoint_left_it(toy, tmp_path):
    mesh, model = toy
    scene = scene_for(mesh, model)
    settings = RGSDSettings(6, 0.05, 1.0, True, 2, 0)
    whole = TextureRefiner(mesh.texture, settings, CPU)
    whole.run(model, scene, RGNV)
    checkpoint = tmp_path / "checkpoint.pt"
    broken = TextureRefiner(mesh.texture, settings, CPU)

    def interrupt(facts):
        if broken.iteration == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        broken.run(model, scene, RGNV, checkpoint, on_step=interrupt)
    resumed = TextureRefiner(mesh.texture, settings, CPU)
    steps = []
    resumed.run(model, scene, RGNV, checkpoint, on_step=lambda facts: steps.append(resumed.iteration))
    assert steps == [5, 6]  # the checkpoint at iteration 4, then the last two
    assert torch.allclose(resumed.texture, whole.texture, atol=1e-6)


# The pipeline around the stage: tiny models, an untrained field meshed by the real mesh stage.

def run_folder(tmp_path, refine_on: bool, extra=()):
    """A run of fake segment/elevation/generate/enhance/reconstruct stages, the real mesh stage and
    (``refine_on``) the real refine stage with the tiny model."""
    from PIL import Image

    from img2mesh.app import load_config
    from img2mesh.console import ConsoleReporter
    from img2mesh.enhance.stage import STAGE as ENHANCE
    from img2mesh.mesh.stage import STAGE as MESH
    from img2mesh.pipeline.contract import Stage
    from img2mesh.pipeline.runner import Runner
    from img2mesh.reconstruct.storage import save_field
    from img2mesh.refine.stage import STAGE as REFINE
    from img2mesh.utils.files import atomic_write_json

    from helpers.scenes import small_field

    def segment(ctx):
        rgba = np.zeros((120, 100, 4), np.uint8)
        rgba[20:100, 20:80] = (200, 60, 40, 255)
        Image.fromarray(rgba).save(ctx.out_dir / "rgba.png")

    def elevation(ctx):
        atomic_write_json(ctx.out_dir / "elevation.json", {"elevation_deg": 30.0})

    def generate(ctx):
        atomic_write_json(ctx.out_dir / "scores.json", {"best_sample": 0, "samples": [{"sample": 0, "score": 1.0}]})

    def reconstruct(ctx):
        save_field(small_field(), ctx.out_dir)

    stages = [Stage("segment", "", (), ("rgba.png",), (), run=segment),
              Stage("elevation", "", (), ("elevation.json",), (), run=elevation),
              Stage("generate", "", (), ("scores.json",), (), run=generate), ENHANCE,
              Stage("reconstruct", "", (), ("field.json",), (), run=reconstruct), MESH, REFINE]
    overrides = ["mesh.resolution=40", "mesh.target_faces=1500", "mesh.texture_size=64", "mesh.preview=false",
                 "mesh.formats=[glb, obj]", "sd2_depth.model=tiny", "sd2_depth.random_weights=true",
                 f"refine.enabled={str(refine_on).lower()}", "refine.iterations=4", "refine.cameras=2",
                 "refine.steps=4", "refine.inversion_steps=2", "refine.fixed_views=[0, 8]", *extra]
    tmp_path.mkdir(parents=True, exist_ok=True)
    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32)).save(image)
    result = Runner(stages, load_config(overrides=overrides), "cpu", ConsoleReporter(quiet=True)).run(image, tmp_path / "out")
    assert result.ok, result.error
    return tmp_path / "out", result


@pytest.fixture(scope="module")
def refined(tmp_path_factory, toy):
    import img2mesh.hifi123.rgnv as rgnv

    counted = []
    original = rgnv.prepare_reference

    def counting(*args, **kwargs):
        counted.append(1)
        return original(*args, **kwargs)

    rgnv.prepare_reference = counting
    try:
        out, result = run_folder(tmp_path_factory.mktemp("refined"), True)
    finally:
        rgnv.prepare_reference = original
    return out, result, counted


def test_the_stage_refines_the_texture_keeps_the_geometry_and_publishes(refined):
    from img2mesh.mesh.export import load_mesh

    out, result, counted = refined
    assert counted == [1]  # the reference is inverted and denoised once per run
    before, after = load_mesh(out / "mesh" / "mesh.glb"), load_mesh(out / "refine" / "mesh.glb")
    assert np.array_equal(before.vertices, after.vertices) and np.array_equal(before.faces, after.faces)
    texture = lambda mesh: np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))  # noqa: E731
    assert not np.array_equal(texture(before), texture(after))
    assert (out / "mesh.glb").read_bytes() == (out / "refine" / "mesh.glb").read_bytes()  # published over mesh's
    assert (out / "mesh_albedo.png").read_bytes() == (out / "refine" / "mesh_albedo.png").read_bytes()
    info = json.loads((out / "refine" / "refine.json").read_text())
    assert info["iterations"] == 4 and info["render_size"] == 64 and info["distillation"] is True
    assert (out / "refine" / "before_after.png").is_file()
    # the diagnostics that need no weights to read
    assert info["supersample"] == 1 and 0 < info["texels_with_gradient_per_step"] <= 1
    assert info["texels_with_gradient_in_run"] >= info["texels_with_gradient_per_step"]
    for facts in (info["before"], info["after"]):
        assert 0 <= facts["photo_silhouette_iou"] <= 1 and len(facts["target_silhouette_iou"]) == 2
        assert facts["latent_error_inside"] >= 0 and facts["latent_error_band"] >= 0
    # the gutters between charts carry their chart's refined colour (re-padded), as the mesh stage leaves them
    from img2mesh.mesh.texture import pad_charts
    from img2mesh.refine.diagnostics import chart_texels
    from img2mesh.refine.render import TexturedMesh

    refined_mesh = TexturedMesh.from_glb(out / "refine" / "mesh.glb")
    charts = chart_texels(refined_mesh, CPU)
    assert np.array_equal(pad_charts(refined_mesh.texture, charts), refined_mesh.texture)
    statuses = [(o.stage, o.status) for o in result.outcomes]
    assert statuses[-2:] == [("mesh", "done"), ("refine", "done")] and ("enhance", "off") in statuses


def test_the_report_shows_before_and_after(refined):
    from img2mesh.app import default_stages
    from img2mesh.report.page import write_report

    out, _, _ = refined
    page = write_report(out, default_stages()).read_text()
    assert "Refined texture" in page and "refine/before_after.png" in page and "data-model='mesh.glb'" in page
    assert "<td>enhance</td><td class='muted'>off</td><td></td>" in page  # not "done 0.0 s"


def test_without_refine_the_outputs_are_what_the_mesh_stage_made(tmp_path, refined):
    """Refine off: the stage records "off" and writes nothing; every file is the mesh stage's."""
    out, result = run_folder(tmp_path / "off", False)
    files = snapshot(out)
    assert not (out / "refine").exists() and ("refine", "off") in [(o.stage, o.status) for o in result.outcomes]
    assert files["mesh.glb"] == snapshot(out / "mesh")["mesh.glb"]
    refined_out, _, _ = refined
    same = {k: v for k, v in files.items() if k.startswith("mesh/")}
    assert same == {k: v for k, v in snapshot(refined_out).items() if k.startswith("mesh/")}  # mesh stage unchanged
    # switching it on, then off again: the refined files go, the mesh stage's come back
    run_folder(tmp_path / "off", True)
    run_folder(tmp_path / "off", False)
    assert snapshot(out) == {**files, "img2mesh.json": snapshot(out)["img2mesh.json"]}


def test_supersampling_follows_the_atlas_and_gives_more_texels_a_gradient(toy):
    """refine.supersample auto: texture size / render size, 1 to 4; a 4x raster averaged down reads (and
    sends a gradient to) more of a 256² atlas than the 64² render alone."""
    from img2mesh.app import load_config
    from img2mesh.refine.diagnostics import chart_texels
    from img2mesh.refine.stage import supersample

    config = load_config()
    assert [supersample(config, t, 512) for t in (512, 1024, 2048, 8192)] == [1, 2, 4, 4]
    assert supersample(load_config(overrides=["refine.supersample=2"]), 8192, 512) == 2
    mesh, _ = toy
    big = dataclasses.replace(mesh, texture=np.asarray(Image.fromarray(mesh.texture).resize((256, 256))))
    charts = chart_texels(big, CPU)
    shares = []
    for factor in (1, 4):
        camera = rasterise(big, cameras.intrinsics(64 * factor), cameras.target_poses()[0], 64 * factor, CPU)
        scene = Scene([], [], None, camera, torch.full((1, 3, 64, 64), 0.5), None, None, supersample=factor,
                      model_size=64)
        assert scene.image(torch.rand(1, 3, 256, 256), camera).shape[-1] == 64  # averaged down to the model's size
        refiner = TextureRefiner(big.texture, RGSDSettings(1, 0.01, 1.0, False, 100, 0), CPU)
        refiner.charts = torch.from_numpy(charts)
        refiner.step(None, scene, None)
        shares.append(refiner.touched_per_step[0])
    assert shares[1] > 2 * shares[0], shares


def test_the_photos_loss_counts_only_inside_its_region():
    from img2mesh.refine.rgsd import photo_region, photo_term

    rendered, photo = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    photo[..., :, 4:] = 1.0  # the right half disagrees
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:, :4] = True
    assert float(photo_term(rendered, photo, region)) == 0.0 and float(photo_term(rendered, photo, None)) == 0.5
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True
    other = np.zeros((8, 8), bool)
    other[1:7, 2:8] = True
    assert photo_region(mask, other, 1).sum() == (4 * 3)  # the overlap (6x5), eroded by one pixel
