"""The SyncDreamer implementation against the official numbers in the conformance directory.

Every width comes from the directory's ``config.json``; the weights go through the same loader
users get (``load_syncdreamer``), from the ``.ckpt`` and from the ``.safetensors``. Tolerance:
``max|got - ref| / max|ref| <= 1e-4`` for floats (the official fp32 noise floor is ~2e-6), ±1 for
uint8 images.
"""

from __future__ import annotations

import json

import pytest
import torch

from img2mesh.generate.architecture import SyncDreamerConfig
from img2mesh.generate.loading import load_syncdreamer
from img2mesh.generate.model import Guidance, sinusoid
from img2mesh.generate.sampler import SamplerSettings, ViewBatcher, decode_views, sample_latents
from img2mesh.generate.scheduler import DDIMSchedule
from img2mesh.generate.volume import frustum_points, warp_coordinates

TOLERANCE = 1e-4
GUIDANCE = {"cfg2": Guidance("cfg", (2.0,)), "cfg1": Guidance("cfg", (1.0,)),
            "dg2_1": Guidance("harmony", (2.0, 1.0)), "dg0.5_3": Guidance("harmony", (0.5, 3.0))}


def parse_slice(text: str) -> tuple:
    """'[:, ::8, 1::4]' -> (slice(None), slice(None, None, 8), slice(1, None, 4))."""
    parts = []
    for item in text.strip("[]").split(","):
        bounds = [int(b) if b.strip() else None for b in item.strip().split(":")]
        parts.append(slice(*bounds) if len(bounds) > 1 else bounds[0])
    return tuple(parts)


class Vectors:
    def __init__(self, folder):
        from safetensors.torch import load_file

        self.index = {f"{t['file'].split('/')[-1].split('.')[0]}:{t['name']}": t
                      for t in json.loads((folder / "vectors" / "index.json").read_text())["tensors"]}
        self.tensors = {}
        for stem in {key.split(":")[0] for key in self.index}:
            for name, value in load_file(folder / "vectors" / f"{stem}.safetensors").items():
                self.tensors[f"{stem}:{name}"] = value
        self.worst: dict[str, float] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def check(self, key: str, got: torch.Tensor) -> None:
        """Compare with the reference, applying the entry's subsample when it has one."""
        entry = self.index[key]
        if "subsample" in entry:
            got = got[parse_slice(entry["subsample"])]
        ref = self.tensors[key]
        assert tuple(got.shape) == tuple(ref.shape), f"{key}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
        if ref.dtype == torch.uint8:
            error = (got.int() - ref.int()).abs().max().item()
            assert error <= 1, f"{key}: uint8 differs by {error}"
        else:
            error = ((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp(min=1e-12)).item()
            assert error <= TOLERANCE, f"{key}: relative error {error:.2e} > {TOLERANCE}"
        self.worst[key] = error


@pytest.fixture(scope="module")
def vectors(conformance):
    v = Vectors(conformance)
    yield v
    if v.worst:
        worst = max((e, k) for k, e in v.worst.items() if v.tensors[k].dtype != torch.uint8)
        print(f"\nconformance: {len(v.worst)} vectors checked, worst relative error {worst[0]:.2e} ({worst[1]})")


def expected_keys(folder) -> dict[str, list[int]]:
    return {k["key"]: k["shape"] for k in json.loads((folder / "tiny_manifest.json").read_text())["keys"]}


@pytest.fixture(scope="module")
def config(conformance) -> SyncDreamerConfig:
    return SyncDreamerConfig.from_conformance_json(conformance / "config.json")


@pytest.fixture(scope="module")
def model(conformance, config, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMG2MESH_CACHE", str(cache))
        network, _ = load_syncdreamer(config, checkpoint=str(conformance / "tiny.ckpt"),
                                      expected_keys=expected_keys(conformance))
    return network


def test_ckpt_and_safetensors_give_the_same_model(conformance, config, model, tmp_path, monkeypatch):
    monkeypatch.setenv("IMG2MESH_CACHE", str(tmp_path))
    other, info = load_syncdreamer(config, checkpoint=str(conformance / "tiny.safetensors"),
                                   expected_keys=expected_keys(conformance))
    ours, theirs = model.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert info.sha256 and info.converted and info.converted.endswith(".safetensors")


def test_inputs(vectors):
    images = torch.stack([vectors["preprocess:prepare_inputs/wide/crop200/input_image"],
                          vectors["preprocess:prepare_inputs/tall/crop200/input_image"]])
    assert images.shape == (2, 256, 256, 3)
    for name, deg in (("wide", 30.0), ("tall", 10.0)):
        for tag in ("crop200", "nocrop"):
            vectors.check(f"preprocess:prepare_inputs/{name}/{tag}/input_elevation",
                          torch.tensor([deg], dtype=torch.float64).deg2rad().float())


@pytest.fixture(scope="module")
def images(vectors) -> torch.Tensor:
    return torch.stack([vectors["preprocess:prepare_inputs/wide/crop200/input_image"],
                        vectors["preprocess:prepare_inputs/tall/crop200/input_image"]]).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def elevations(vectors) -> torch.Tensor:
    return torch.stack([vectors["preprocess:prepare_inputs/wide/crop200/input_elevation"],
                        vectors["preprocess:prepare_inputs/tall/crop200/input_elevation"]])[:, 0]


@torch.no_grad()
def test_clip_and_vae(vectors, model, images):
    vectors.check("preprocess:clip/preprocessed", model.clip_preprocess(images))
    vectors.check("preprocess:clip/embedding", model.encode_clip(images))
    vectors.check("vae:encode/moments", model.vae_moments(images))
    vectors.check("vae:encode/mode_scaled", model.encode_image(images))
    vectors.check("vae:encode/sample_scaled", model.encode_image(images, vectors["vae:encode/sample_eps"]))
    vectors.check("vae:decode/image", model.decode(vectors["vae:decode/z"]))


@torch.no_grad()
def test_embeddings_and_schedules(vectors, model, elevations):
    vectors.check("embeddings:viewpoint/embedding", model.viewpoint_embedding(elevations))
    t = vectors["embeddings:time/t"]
    vectors.check("embeddings:time/sinusoid256", sinusoid(t, 256))
    vectors.check("embeddings:time/embed_time", model.embed_time(t))
    base = model.unet.base
    vectors.check("embeddings:time/unet_time_embed", base.time_embedding(base.time_proj(t)))
    vectors.check("embeddings:schedule/ddpm/betas", model.betas)
    vectors.check("embeddings:schedule/ddpm/alphas_cumprod", model.alphas_cumprod)
    for steps in (50, 4):
        schedule = DDIMSchedule(model.alphas_cumprod, steps, 1.0)
        prefix = f"embeddings:schedule/ddim{steps}/ddim_"
        assert schedule.timesteps.tolist() == vectors[prefix + "timesteps"].tolist()
        for name, value in (("alphas", schedule.alphas), ("alphas_prev", schedule.alphas_prev),
                            ("sigmas", schedule.sigmas), ("sqrt_one_minus_alphas", schedule.sqrt_one_minus_alphas)):
            vectors.check(prefix + name, value)


@pytest.fixture(scope="module")
def spatial(vectors, model):
    with torch.no_grad():
        x_t, t = vectors["volume:spatial/x_t"], vectors["volume:spatial/t"]
        t_embed = model.embed_time(t)
        v_embed = model.viewpoint_embedding(vectors["preprocess:prepare_inputs/wide/crop200/input_elevation"])
        volume = model.spatial_volume.construct_spatial_volume(x_t, t_embed, v_embed, model.poses, model.Ks)
    return x_t, t, t_embed, v_embed, volume


@torch.no_grad()
def test_spatial_volume(vectors, model, spatial):
    x_t, _, t_embed, v_embed, volume = spatial
    vectors.check("volume:spatial/t_embed", t_embed)
    vectors.check("volume:spatial/v_embed", v_embed)
    vectors.check("volume:spatial/target_encoder_view0", model.spatial_volume.target_encoder(x_t[:, 0], t_embed, v_embed[:, 0]))
    verts = model.spatial_volume.volume_vertices(1, x_t.device)
    for view in (0, 5):
        vectors.check(f"volume:spatial/warp_coords_view{view}",
                      warp_coordinates(verts, 32, 256, model.Ks[view][None], model.poses[view][None]))
    vectors.check("volume:spatial/unprojected",
                  model.spatial_volume.unproject_views(x_t, t_embed, v_embed, model.poses, model.Ks))
    vectors.check("volume:spatial/volume", volume)


def target_feats(vectors, model, spatial, views):
    _, _, t_embed, v_embed, volume = spatial
    x_input = vectors["vae:encode/mode_scaled"][0:1]
    clip = vectors["preprocess:clip/embedding"][0:1]
    return model.target_view_feats(x_input, volume, clip, t_embed, v_embed, torch.tensor([views]))


@torch.no_grad()
@pytest.mark.parametrize("tag, views", [("views0-3", [0, 1, 2, 3]), ("views12-15", [12, 13, 14, 15])])
def test_frustum_volumes(vectors, model, spatial, tag, views):
    assert vectors[f"volume:target/{tag}/target_index"].tolist() == [views]
    clip, volume_feats, x_concat = target_feats(vectors, model, spatial, views)
    prefix = f"volume:target/{tag}/"
    vectors.check(prefix + "clip_embed", clip)
    vectors.check(prefix + "x_concat", x_concat)
    for width, feats in volume_feats.items():
        vectors.check(prefix + f"volume_feats/{width}", feats)
    sampled, depths = model.spatial_volume.sample_frustums(spatial[4], model.poses, model.Ks, torch.tensor([views]))
    vectors.check(prefix + "frustum_sampled", sampled)
    vectors.check(prefix + "frustum_depth_first_view", depths[0:1])
    if tag == "views0-3":
        c = model.config
        points, _ = frustum_points(c.frustum_volume_depth, c.latent_size, c.image_size, model.poses[0:1],
                                   model.Ks[0:1], c.origin_depth - c.frustum_volume_length,
                                   c.origin_depth + c.frustum_volume_length)
        vectors.check(prefix + "frustum_xyz_first_view", points)


@torch.no_grad()
def test_unet_on_chained_inputs(vectors, model, spatial):
    x_t, t = spatial[0], spatial[1]
    clip, volume_feats, x_concat = target_feats(vectors, model, spatial, [0, 1, 2, 3])
    for tag, guidance in (("forward", GUIDANCE["cfg1"]), ("cfg2", GUIDANCE["cfg2"]), ("dg2_1", GUIDANCE["dg2_1"])):
        vectors.check(f"unet:chained/{tag}", model.guided_noise(x_t[0, 0:4], t.repeat(4), clip, volume_feats,
                                                               x_concat, guidance))


def isolated(vectors):
    feats = {int(k.rsplit("/", 1)[1]): v for k, v in vectors.tensors.items() if k.startswith("unet:isolated/volume_feats/")}
    return vectors["unet:isolated/x"], vectors["unet:isolated/t"], feats, vectors["unet:isolated/x_concat"]


@torch.no_grad()
def test_unet_on_isolated_inputs(vectors, model):
    x, t, feats, x_concat = isolated(vectors)
    clip = vectors["unet:isolated/clip_embed"]
    for tag in ("cfg2", "dg2_1", "dg0.5_3"):
        vectors.check(f"unet:isolated/{tag}", model.guided_noise(x, t, clip, feats, x_concat, GUIDANCE[tag]))
    vectors.check("unet:isolated/forward", model.guided_noise(x, t, clip, feats, x_concat, GUIDANCE["cfg1"]))
    vectors.check("unet:isolated/forward_ctx3", model.guided_noise(
        x, t, vectors["unet:isolated/clip_embed_3tokens"], feats, x_concat, GUIDANCE["cfg1"]))


@torch.no_grad()
def test_unet_inner_blocks(vectors, model):
    """Each official block's output, caught with hooks on the diffusers module it maps to."""
    base, unet = model.unet.base, model.unet
    modules = {
        "input_blocks.0": base.conv_in, "input_blocks.1": base.down_blocks[0].attentions[0],
        "input_blocks.2": base.down_blocks[0].attentions[1], "input_blocks.5": base.down_blocks[1].attentions[1],
        "input_blocks.8": base.down_blocks[2].attentions[1], "input_blocks.11": base.down_blocks[3].resnets[1],
        "middle_block": base.mid_block, "middle_conditions": unet.middle_conditions,
        "output_blocks.2": base.up_blocks[0].upsamplers[0], "output_conditions.0": unet.output_conditions[0],
        "output_blocks.5": base.up_blocks[1].upsamplers[0], "output_conditions.2": unet.output_conditions[2],
        "output_blocks.8": base.up_blocks[2].upsamplers[0], "output_conditions.5": unet.output_conditions[5],
        "output_blocks.11": base.up_blocks[3].attentions[2], "output_conditions.8": unet.output_conditions[8],
    }
    caught = {}

    def catcher(name):
        def hook(module, args, out):  # returns None, so the output is left as it is
            caught.setdefault(name, out[0] if isinstance(out, tuple) else getattr(out, "sample", out))
        return hook

    hooks = [m.register_forward_hook(catcher(name)) for name, m in modules.items()]
    try:
        x, t, feats, x_concat = isolated(vectors)
        model.guided_noise(x, t, vectors["unet:isolated/clip_embed"], feats, x_concat, GUIDANCE["cfg1"])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(caught) == 16
    for name, value in caught.items():
        vectors.check(f"unet:isolated/blocks/{name}", value[0:1])


@torch.no_grad()
@pytest.mark.parametrize("tag, index", [("index40/cfg2", 40), ("index40/cfg1", 40), ("index40/dg2_1", 40),
                                        ("index0/cfg2", 0), ("index0/dg2_1", 0)])
def test_one_ddim_step(vectors, model, spatial, tag, index):
    schedule = DDIMSchedule(model.alphas_cumprod, 50, 1.0)
    x_t = vectors["volume:spatial/x_t"]
    t = torch.tensor([int(schedule.timesteps[index])])
    v_embed = spatial[3]
    e_t = ViewBatcher(4).noise(model, x_t, t, vectors["vae:encode/mode_scaled"][0:1],
                              vectors["preprocess:clip/embedding"][0:1], v_embed, GUIDANCE[tag.split("/")[1]])
    if f"sampler:step/{tag}/e_t" in vectors.index:
        vectors.check(f"sampler:step/{tag}/e_t", e_t)
    noise = None if index == 0 else vectors["sampler:step/noise"]
    vectors.check(f"sampler:step/{tag}/x_prev", schedule.step(x_t, e_t, index, noise))


@pytest.mark.parametrize("tag", ["cfg2", "dg2_1"])
def test_full_sampling_runs(vectors, model, images, elevations, tag):
    draws = [vectors[f"sampler:run/{n}"] for n in ("posterior_eps", "x_T", "noise_index3", "noise_index2", "noise_index1")]

    def replay(shape):
        draw = draws.pop(0)
        assert tuple(draw.shape) == tuple(shape), "random draws out of the official order"
        return draw

    steps_seen = []
    latents = sample_latents(model, images, elevations, SamplerSettings(GUIDANCE[tag], 4, 1.0, 4, "sample"),
                             replay, on_step=steps_seen.append)
    assert draws == [] and steps_seen == [0, 1, 2, 3]
    vectors.check(f"sampler:run/{tag}/after_step3", latents)
    if tag == "cfg2":
        with torch.no_grad():
            vectors.check("sampler:run/cfg2/image_b0_view0", model.decode(latents[0:1, 0]))
            vectors.check("sampler:run/cfg2/image_uint8_b0_views0_8", decode_views(model, latents[0:1, [0, 8]]))


def test_first_step_of_full_run(vectors, model, images, elevations):
    draws = [vectors[f"sampler:run/{n}"] for n in ("posterior_eps", "x_T", "noise_index3")]
    settings = SamplerSettings(GUIDANCE["cfg2"], 1, 1.0, 16, "sample")

    class StopAfterFirstStep(Exception):
        pass

    # Run the 4-step schedule but stop after step 0 to compare the intermediate latents.
    from img2mesh.generate import sampler as sampler_module

    with torch.no_grad():
        x_input = model.encode_image(images, draws[0])
        clip = model.encode_clip(images)
        v_embed = model.viewpoint_embedding(elevations)
        schedule = DDIMSchedule(model.alphas_cumprod, 4, 1.0)
        t = torch.full((2,), int(schedule.timesteps[-1]))
        e_t = sampler_module.ViewBatcher(settings.batch_views).noise(model, draws[1], t, x_input, clip, v_embed,
                                                                      settings.guidance)
        vectors.check("sampler:run/cfg2/after_step0", schedule.step(draws[1], e_t, 3, draws[2]))


def test_full_size_model_matches_the_released_checkpoint_layout():
    """Convert a stand-in with every key and shape of the real checkpoint into the FULL model (on meta)."""
    from img2mesh.generate.convert import check_keys, convert_official, full_manifest
    from img2mesh.generate.model import SyncDreamer

    manifest = full_manifest()
    assert len(manifest) == 1618
    assert sum(k.startswith("clip_image_encoder.model.visual.") for k in manifest) == 296  # CLIP is inside
    with torch.device("meta"):
        network = SyncDreamer(SyncDreamerConfig.full())
        fake = {k: torch.empty(shape) for k, shape in manifest.items()}
    converted = convert_official(fake, network, manifest, source="manifest")
    ours = {k: list(v.shape) for k, v in network.state_dict().items()}
    assert {k: list(v.shape) for k, v in converted.items()} == ours
    check_keys(converted, ours, "manifest")  # what load_converted checks: nothing missing or left over
    total = sum(v.numel() for k, v in network.state_dict().items() if not k.startswith(("betas", "alphas", "sqrt_", "posterior_", "poses", "Ks", "azimuth")))
    # 1,392,362,668 official parameters minus the 38,595,841 CLIP text-side leftovers we drop
    assert total == 1_392_362_668 - 38_595_841
