from pathlib import Path

import pytest

from img2mesh.errors import UsageError
from img2mesh.pipeline.config import PRESETS, config_keys, load_config, preset_text

from helpers.data import ROOT


def test_default_config_loads_with_documented_values():
    cfg = load_config()
    assert cfg.generate.guidance == "harmony"
    assert cfg.generate.harmony_scales == [2.0, 1.0]
    assert cfg.mesh.resolution == 256
    assert cfg.elevation.value is None


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads_and_changes_only_known_keys(preset):
    cfg = load_config(preset)
    assert cfg.run.seed == 0
    if preset != "default":  # the defaults are the schema's; a preset file holds only changes
        assert "reconstruct:" in preset_text(preset)


def test_presets_differ_where_they_say():
    assert load_config("quality").mesh.resolution == 512
    assert load_config("smoke").reconstruct.steps < load_config().reconstruct.steps
    assert load_config("fast").reconstruct.field == "hashgrid"


def test_set_overrides_parse_yaml_values():
    cfg = load_config(overrides=["generate.steps=25", "mesh.formats=[glb, ply]", "generate.checkpoint=/x.ckpt"])
    assert cfg.generate.steps == 25
    assert cfg.mesh.formats == ["glb", "ply"]
    assert cfg.generate.checkpoint == "/x.ckpt"


def test_int_accepted_for_float_but_not_the_reverse():
    assert load_config(overrides=["generate.eta=0"]).generate.eta == 0.0
    with pytest.raises(UsageError, match="generate.steps: expected int"):
        load_config(overrides=["generate.steps=2.5"])


@pytest.mark.parametrize("override, message", [
    ("generate.stepz=3", "unknown config key generate.stepz"),
    ("nosuch.key=1", "unknown config key nosuch"),
    ("generate.steps=many", "generate.steps: expected int"),
    ("generate.guidance=magic", "generate.guidance: expected cfg | harmony"),
    ("mesh.formats=[glb, fbx]", r"mesh.formats\[1\]"),
    ("mesh.preview=yes please", "mesh.preview: expected bool"),
    ("run.device=gpu", "run.device"),
    ("generate.harmony_scales=[1.0]", "exactly two"),
    ("generate.steps=0", "at least 1"),
    ("generate.steps", "KEY=VALUE"),
    ("=3", "KEY=VALUE"),
    ("generate.steps.x=3", "unknown config key generate.steps"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UsageError, match=message):
        load_config(overrides=[override])


def test_config_file_layers_over_preset(tmp_path: Path):
    path = tmp_path / "my.yaml"
    path.write_text("generate:\n  steps: 7\n")
    cfg = load_config("smoke", path)
    assert cfg.generate.steps == 7
    assert cfg.reconstruct.steps == load_config("smoke").reconstruct.steps


@pytest.mark.parametrize("text, message", [
    ("generate: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("generate:\n  nope: 1\n", "unknown config key generate.nope"),
    ("generate: 3\n", "generate: expected a mapping"),
])
def test_bad_config_files(tmp_path: Path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_config(config_file=path)


def test_missing_config_file_and_unknown_preset(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(config_file=tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="unknown preset"):
        load_config("turbo")


def test_values_win_over_overrides():
    cfg = load_config(overrides=["run.seed=3"], values={"run.seed": 9})
    assert cfg.run.seed == 9


def test_every_key_has_one_default_and_the_readme_documents_it():
    """The schema's defaults are the only ones; README's key table names every key (by its last part)."""
    import dataclasses

    from img2mesh.pipeline.config import Config

    def flat(values: dict, prefix: str = "") -> set[str]:  # nested sections (generate.feedback) included
        return set().union(*(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
                             for k, v in values.items()))

    assert flat(dataclasses.asdict(Config())) == set(config_keys())
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| key | default | meaning |"):readme.index("## Stages")]
    missing = [key for key in config_keys() if f"`{key}`" not in table and f"{key.split('.')[-1]}`" not in table]
    assert not missing, f"README's configuration table lacks {missing}"


def test_internal_settings_take_no_defaults_of_their_own():
    """TrainSettings, SamplerSettings, Guidance and FieldConfig are built from the config."""
    import dataclasses

    from img2mesh.generate.model import Guidance
    from img2mesh.generate.sampler import SamplerSettings
    from img2mesh.reconstruct.fields import FieldConfig
    from img2mesh.reconstruct.renderer import RenderSettings
    from img2mesh.reconstruct.trainer import TrainSettings

    config_backed = {TrainSettings: {"steps", "rays_per_step", "learning_rate", "warmup_steps", "mask_loss", "mask_weight",
                                     "eikonal_weight", "curvature_weight", "checkpoint_every", "seed"},
                     SamplerSettings: {"guidance", "steps", "eta", "batch_views", "input_latent"},
                     Guidance: {"kind", "scales"},
                     FieldConfig: {"kind", "hidden", "layers", "skip_at", "hash_levels", "hash_log2_size", "bound"},
                     RenderSettings: {"coarse_samples", "fine_samples", "bound"}}
    for cls, names in config_backed.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        with_default = [n for n in names if fields[n].default is not dataclasses.MISSING]
        assert not with_default, f"{cls.__name__} has its own defaults for {with_default}"


def test_config_command_prints_the_resolved_config():
    import yaml
    from typer.testing import CliRunner

    from img2mesh.cli import app

    result = CliRunner().invoke(app, ["config", "--preset", "smoke", "--set", "generate.steps=7"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["generate"]["steps"] == 7 and shown["reconstruct"]["steps"] == 500
    assert shown["mesh"]["resolution"] == load_config("smoke").mesh.resolution
    bad = CliRunner().invoke(app, ["config", "--set", "generate.nope=1"])
    assert bad.exit_code == 2 and "unknown config key generate.nope" in bad.stderr
