"""Configuration: the defaults below + a preset + a ``--config`` file + ``--set`` overrides.

The dataclasses below are the schema and the only place a default lives (internal settings objects
are built from a resolved :class:`Config`, never given defaults of their own). A preset
(``img2mesh/configs/<preset>.yaml``, read with ``importlib.resources``) holds only what it changes.
Everything is validated on load and a wrong key or type is a :class:`UsageError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from img2mesh.errors import UsageError
from img2mesh.utils.weights import SD2_DEPTH_REPO

PRESETS = ("default", "smoke", "fast", "quality")
# generate.num_samples auto makes at most this many sets (HarmonyView's scripts make 2-4, SyncDreamer's
# example 4); here because reconstruct's --select check needs it too
AUTO_MAX_SETS = 4
PRESET_FOLDER = "configs"  # inside the package: smoke.yaml, fast.yaml, quality.yaml (what each changes)


@dataclass
class RunConfig:
    seed: int = 0  # one seed for every random draw of a run
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class SceneConfig:
    # half-size of the cube the object lives in (world units; SyncDreamer's objects fit in 0.5, the
    # official NeuS renders inside a 0.6 cube): NeuS samples, the occupancy grid, the hash-grid domain,
    # the marching-cubes box and the scoring hull all span [-bound, bound]^3
    bound: float = 0.6


@dataclass
class SegmentConfig:
    use_alpha: Literal["auto", "always", "never"] = "auto"  # use the input's own alpha instead of carvekit
    crop_size: int = 200  # larger side of the object in the 256x256 input; -1 = only pad to square
    max_pixels: int = 100_000_000  # refuse larger inputs before decoding them (decompression bombs)
    random_weights: bool = False  # untrained carvekit networks: tests of the plumbing only
    seg_size: int = 640  # Tracer-B7 input size
    matting_size: int = 2048  # FBA matting input size


@dataclass
class ElevationConfig:
    value: Optional[float] = None  # degrees; set (or --elevation) to skip estimation
    default: float = 30.0  # used with a warning when estimation finds too few matches
    min: float = -10.0  # SyncDreamer's trained range; estimates are clamped to it
    max: float = 40.0
    search: list[float] = dataclasses.field(default_factory=lambda: [-20.0, 60.0])  # 10 degree steps, then 1 around the best
    matcher: Literal["loftr", "sift"] = "loftr"
    loftr_weights: Literal["indoor_new", "outdoor"] = "indoor_new"  # One-2-3-45's choice
    match_size: int = 480  # views are matched as grey images of this size (One-2-3-45: 480)
    cfg_scale: float = 3.0  # guidance of the four Zero123-mode views (One-2-3-45: 3)


@dataclass
class FeedbackConfig:
    """3D-aware feedback during sampling (README: Feedback during sampling); off while ``steps`` is empty."""

    steps: list[int] = dataclasses.field(default_factory=list)  # DDIM steps (1 = the first) that get feedback
    weight: float = 0.5  # how far x̂₀ moves towards the renders where they cover the object (0..1)
    fit_steps: int = 100  # NeuS steps per feedback step; each fit continues the previous one
    rays_per_step: int = 1024
    image_size: int = 64  # the predicted views are fitted, and the model rendered, at this size
    field: Literal["mlp", "hashgrid"] = "mlp"  # the fast 3D model's field (README: why mlp by default)


@dataclass
class GenerateConfig:
    model: Literal["full", "tiny"] = "full"  # tiny: the conformance widths, for tests
    random_weights: bool = False  # an untrained network: tests of the plumbing only
    checkpoint: Optional[str] = None  # syncdreamer-pretrain.ckpt (--checkpoint); null = the Hugging Face Hub
    trust_checkpoint: bool = False  # allow unpickling a checkpoint that safe loading refuses
    hub_sources: list[str] = dataclasses.field(default_factory=lambda: [  # tried in order: "repo_type:owner/name/file"
        "space:liuyuan-pal/SyncDreamer/ckpt/syncdreamer-pretrain.ckpt",
        "model:camenduru/SyncDreamer/syncdreamer-pretrain.ckpt",
    ])
    guidance: Literal["cfg", "harmony"] = "harmony"
    cfg_scale: float = 2.0
    harmony_scales: list[float] = dataclasses.field(default_factory=lambda: [2.0, 1.0])
    steps: int = 50
    eta: float = 1.0
    num_samples: Union[Literal["auto"], int] = "auto"  # sample sets; auto: by free GPU memory, 1 on the CPU
    batch_views: int = 16
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # the denoiser's dtype on CUDA (auto: fp16)
    input_latent: Literal["sample", "mode"] = "sample"
    feedback: FeedbackConfig = dataclasses.field(default_factory=FeedbackConfig)


@dataclass
class EnhanceConfig:
    """HiFi-123's reference-guided novel-view enhancement (README: enhance); off unless ``enabled``."""

    enabled: bool = False  # the quality preset turns it on
    model: Literal["full", "tiny"] = "full"  # full: stabilityai/stable-diffusion-2-depth; tiny: for tests
    random_weights: bool = False  # untrained networks: tests of the plumbing only
    hub_repo: str = SD2_DEPTH_REPO  # a Hub model id, or a folder holding the repository's files
    image_size: int = 512  # the views are upscaled to SD-2-depth's resolution and stay at it
    steps: int = 50  # the DDIM schedule (HiFi-123: 50)
    inversion_steps: int = 30  # l: steps inverted, then denoised with injection (HiFi-123: 30)
    start_step: int = 4  # first denoising step whose novel views read the reference's K/V (MasaCtrl: 4)
    start_layer: int = 10  # first self-attention layer, in forward order, that does (MasaCtrl: 10 of 16)
    guidance: float = 7.5  # classifier-free guidance; only acts with a prompt
    prompt: str = ""  # optional text; empty: the views alone guide
    batch_views: int = 4  # (reference, view) pairs per UNet batch; halved on CUDA out-of-memory
    precision: Literal["auto", "fp32", "fp16"] = "auto"  # auto: fp16 on CUDA, fp32 on the CPU


@dataclass
class ReconstructConfig:
    field: Literal["mlp", "hashgrid"] = "mlp"  # vanilla NeuS, or a multi-resolution hash encoding
    steps: int = 2000
    rays_per_step: int = 4096
    samples_per_ray: int = 128  # dense sampler: half uniform, half importance (NeuS up-sampling)
    sampler: Literal["auto", "dense", "occupancy"] = "auto"  # auto: dense on every device for now
    grid_resolution: int = 128  # occupancy grid cells per side
    march_steps: int = 1024  # occupancy sampler: marching steps across the bounding cube's diagonal
    learning_rate: float = 0.0005
    warmup_steps: int = 200
    image_size: int = 0  # resize the views for training (0 = as they are)
    hidden: int = 256  # SDF network width
    layers: int = 8  # SDF network depth (skip connection half-way)
    feature_dim: int = 256  # SDF network features fed to the colour network (official NeuS: 256)
    color_hidden: int = 256  # colour network width (official: 256)
    color_layers: int = 4  # colour network hidden layers (official: 4)
    view_input: Literal["direction", "reflected"] = "reflected"  # official: reflected about the normal
    hash_levels: int = 16  # hash-grid field: resolution levels (16 to 2048 cells)
    hash_log2_size: int = 19  # hash-grid field: log2 of each level's table size
    # start from NeuS's sphere, fitted to the masks' visual hull, or fitted to generate's last feedback fit
    init: Literal["sphere", "hull", "feedback"] = "hull"
    init_steps: int = 300  # hull init: SDF-fitting steps before training (points only, no rendering)
    # hull init: NeuS's variance parameter when training starts (inv_s = e^(10 v); the sphere keeps NeuS's
    # 0.3, a blurry start that moves the surface): the fitted hull is already at the surface, start sharp
    hull_variance: float = 0.5
    masks: Literal["auto", "remover", "threshold"] = "auto"  # views without alpha: see README (Masks)
    mask_loss: Literal["bce", "mse"] = "bce"  # the official NeuS of SyncDreamer uses mse (README: Masks)
    mask_weight: float = 1.0  # official: 1.0 x mse against 0.5 x soft-L1 colour (ours: 1.0 x L1 colour)
    eikonal_weight: float = 0.1
    curvature_weight: float = 0.05  # normal smoothness, hash-grid field only
    checkpoint_every: int = 500
    select: Union[Literal["auto", "all"], int] = "auto"  # sample set to reconstruct: auto (best score) | K | all


@dataclass
class MeshConfig:
    resolution: int = 256  # marching-cubes grid over [-scene.bound, scene.bound]^3
    min_component: float = 0.01  # keep components with at least this fraction of the faces (1 = largest only)
    formats: list[Literal["glb", "ply", "obj"]] = dataclasses.field(default_factory=lambda: ["glb"])
    target_faces: Optional[int] = 100_000  # quadric decimation before unwrapping; null = keep all
    texture: bool = True  # UV-unwrap (xatlas) and bake an albedo texture into GLB and OBJ
    texture_size: int = 1024  # texture width and height in texels
    preview: bool = True  # turntable.mp4 (GIF without ffmpeg) and preview.png
    remesh: Literal["none", "quad"] = "none"  # quad: also mesh_quad.obj, Instant Meshes quads (~target_faces)


@dataclass
class Config:
    """Every setting of a run. The defaults here are the only ones: presets and files change them."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    scene: SceneConfig = dataclasses.field(default_factory=SceneConfig)
    segment: SegmentConfig = dataclasses.field(default_factory=SegmentConfig)
    elevation: ElevationConfig = dataclasses.field(default_factory=ElevationConfig)
    generate: GenerateConfig = dataclasses.field(default_factory=GenerateConfig)
    enhance: EnhanceConfig = dataclasses.field(default_factory=EnhanceConfig)
    reconstruct: ReconstructConfig = dataclasses.field(default_factory=ReconstructConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (what the manifest stores)."""
        return dataclasses.asdict(self)

    def get(self, dotted: str) -> Any:
        """Value at a dotted key such as ``generate.steps`` (or a whole section)."""
        value: Any = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


# Values a few keys accept beyond their type, checked after the type.
_DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def _check_extra(key: str, value: Any) -> None:
    if key == "run.device":
        ok = value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value[5:].isdigit()
        )
        if not ok:
            raise UsageError(f"config key run.device: {value!r} is not one of {_DEVICE_HELP}")
    if key == "elevation.value" and value is not None and not -90.0 <= value <= 90.0:
        # Beyond +-90 degrees the camera is not above or below the object but upside down behind it.
        raise UsageError(f"config key elevation.value: an elevation from -90 to 90 degrees, got {value:g}")
    if key == "elevation.search" and (len(value) != 2 or value[0] >= value[1]):
        raise UsageError("config key elevation.search: needs [low, high] with low < high")
    if key == "generate.harmony_scales" and len(value) != 2:
        raise UsageError("config key generate.harmony_scales: needs exactly two numbers [s1, s2]")
    positive = ("generate.steps", "elevation.match_size", "generate.num_samples", "generate.batch_views",
                "reconstruct.steps", "reconstruct.rays_per_step",
                "reconstruct.samples_per_ray", "reconstruct.checkpoint_every",
                "mesh.resolution", "segment.max_pixels", "segment.seg_size", "reconstruct.hidden",
                "reconstruct.layers", "reconstruct.warmup_steps", "reconstruct.hash_levels",
                "reconstruct.hash_log2_size", "mesh.texture_size", "mesh.target_faces",
                "reconstruct.grid_resolution", "reconstruct.march_steps",
                "segment.matting_size", "reconstruct.feature_dim", "reconstruct.color_hidden",
                "reconstruct.color_layers", "reconstruct.init_steps", "generate.feedback.fit_steps",
                "generate.feedback.rays_per_step", "generate.feedback.image_size", "enhance.steps",
                "enhance.inversion_steps", "enhance.batch_views")
    if key in positive and isinstance(value, (int, float)) and value < 1:  # "auto" is checked by its type
        raise UsageError(f"config key {key}: must be at least 1, got {value}")
    if key == "reconstruct.select" and isinstance(value, int) and value < 0:
        raise UsageError(f"config key reconstruct.select: a sample index must be 0 or more, got {value}")
    if key == "mesh.min_component" and not 0.0 <= value <= 1.0:
        raise UsageError(f"config key mesh.min_component: a fraction of the faces from 0 to 1, got {value}")
    if key == "reconstruct.hull_variance" and not 0.0 <= value <= 1.0:
        raise UsageError(f"config key reconstruct.hull_variance: from 0 to 1 (inv_s = e^(10 v)), got {value:g}")
    if key == "reconstruct.mask_weight" and value < 0:
        raise UsageError(f"config key reconstruct.mask_weight: must not be negative, got {value}")
    if key == "scene.bound" and not 0.0 < value <= 2.0:
        raise UsageError(f"config key scene.bound: must be above 0 (and at most 2), got {value}")
    if key == "segment.crop_size" and not (value == -1 or 1 <= value <= 256):
        raise UsageError(f"config key segment.crop_size: must be -1 or 1..256, got {value}")
    if key == "generate.feedback.weight" and not 0.0 <= value <= 1.0:
        raise UsageError(f"config key generate.feedback.weight: a fraction from 0 to 1, got {value:g}")
    if key == "generate.feedback.steps" and any(step < 1 for step in value):
        raise UsageError("config key generate.feedback.steps: DDIM steps count from 1")
    if key == "enhance.image_size" and (value < 64 or value % 64):
        raise UsageError(f"config key enhance.image_size: a multiple of 64 (SD-2-depth: 512), got {value}")
    if key in ("enhance.start_step", "enhance.start_layer") and value < 0:
        raise UsageError(f"config key {key}: counts from 0, got {value}")
    if key == "mesh.formats" and not value:
        raise UsageError("config key mesh.formats: name at least one of glb, ply, obj")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    bad = UsageError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for inner in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, inner)
            except UsageError:
                continue
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a schema bug, not user input


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"config key {prefix.rstrip('.') or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UsageError(f"unknown config key {prefix}{key}")
    values = {}
    for name in names:
        dotted = f"{prefix}{name}"
        if name not in data:
            raise UsageError(f"config key {dotted} is missing")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, data[name], f"{dotted}.")
        else:
            values[name] = _coerce(dotted, data[name], tp)
            _check_extra(dotted, values[name])
    return cls(**values)


def preset_text(name: str) -> str:
    """The YAML of a preset shipped inside the package (what it changes from the defaults)."""
    from importlib.resources import files

    return files("img2mesh").joinpath(PRESET_FOLDER, f"{name}.yaml").read_text(encoding="utf-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None


def _parse_yaml(text: str, name: str) -> dict[str, Any]:
    import yaml  # lazy: keeps `img2mesh --help` fast

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"{name} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{name} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``key.sub=value`` into its key path and its YAML-parsed value."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. generate.steps=25")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UsageError(f"--set {text!r}: the value is not valid YAML") from None
    return key.split("."), value


def _apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise UsageError(f"unknown config key {'.'.join(path[: i + 1])}")
        node = child
    if path[-1] not in node:
        raise UsageError(f"unknown config key {'.'.join(path)}")
    node[path[-1]] = value


def load_config(
    preset: str = "default",
    config_file: Optional[Path] = None,
    overrides: Optional[list[str]] = None,
    values: Optional[dict[str, Any]] = None,
) -> Config:
    """Resolve the configuration: defaults, preset, file, ``--set`` overrides, then ``values``.

    ``values`` maps dotted keys to already-typed values (the CLI's dedicated flags such as
    ``--seed``), applied last because a dedicated flag is the most specific request.
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    data = dataclasses.asdict(Config())
    layers = [] if preset == "default" else [(f"preset {preset}", preset_text(preset))]
    if config_file is not None:
        layers.append((f"config file {config_file}", _read_text(Path(config_file))))
    for name, text in layers:
        update = _parse_yaml(text, name)
        # Validate the layer's keys on their own so an unknown key is named, not merged silently.
        _check_known(update, data, "")
        data = _merge(data, update)
    for text in overrides or []:
        path, value = parse_override(text)
        _apply_override(data, path, value)
    for key, value in (values or {}).items():
        _apply_override(data, key.split("."), value)
    return _build(Config, data, "")


def _check_known(update: dict[str, Any], base: dict[str, Any], prefix: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise UsageError(f"unknown config key {prefix}{key}")
        if isinstance(value, dict) and isinstance(base[key], dict):
            _check_known(value, base[key], f"{prefix}{key}.")


def config_keys(section: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the schema, in declaration order."""
    keys = []
    hints = typing.get_type_hints(section)
    for field in dataclasses.fields(section):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{field.name}.")
        else:
            keys.append(f"{prefix}{field.name}")
    return keys
