from pathlib import Path

import pytest

from img2mesh.app import config_schema, load_config
from img2mesh.errors import UsageError
from img2mesh.pipeline.config import PRESETS, config_keys, preset_text

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
    ("reconstruct.hull_variance=1.5", "reconstruct.hull_variance: must be at most 1"),
    ("mesh.min_component=-0.1", "mesh.min_component: must be at least 0"),
    ("segment.crop_size=300", "must be -1 or 1..256"),
    ("elevation.search=[30, 10]", "low < high"),
    ("elevation.value=100", "elevation.value: an elevation from -90 to 90 degrees"),
    ("scene.bound=0", "must be above 0"),
    ("enhance.image_size=100", "a multiple of 64"),
    ("mesh.formats=[]", "name at least one"),
    ("reconstruct.select=-1", "0 or more"),
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


def test_every_key_has_one_default_and_the_generated_reference_is_current():
    """The schema's defaults are the only ones, every key has its help line, and docs/configuration.md
    is exactly what ``img2mesh config --reference`` generates from the schema (regenerate it when a
    key changes: ``make docs``)."""
    import dataclasses

    from img2mesh.pipeline.config import leaf_fields
    from img2mesh.pipeline.reference import configuration_reference

    def flat(values: dict, prefix: str = "") -> set[str]:  # nested sections (generate.feedback) included
        return set().union(*(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
                             for k, v in values.items()))

    schema = config_schema()
    assert flat(dataclasses.asdict(schema())) == set(config_keys(schema))
    undocumented = [key for key, _, field in leaf_fields(schema) if not field.metadata.get("help")]
    assert not undocumented, f"config keys without a help line: {undocumented}"
    reference = configuration_reference(schema)
    assert all(f"`{key}`" in reference for key in config_keys(schema))
    assert (ROOT / "docs" / "configuration.md").read_text() == reference, "docs/configuration.md is stale: make docs"


def settings_classes() -> list[type]:
    """Every settings class of the package: the dataclasses built from a resolved config (they have a
    ``from_config``), found by importing every module, so a new one cannot be forgotten here."""
    import dataclasses
    import importlib
    import inspect
    import pkgutil

    import img2mesh
    from img2mesh.pipeline.config import Section

    found = {}
    for module_info in pkgutil.walk_packages(img2mesh.__path__, "img2mesh."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls) and hasattr(cls, "from_config")
                    and not issubclass(cls, Section)):
                found[cls.__qualname__] = cls
    return list(found.values())


def test_internal_settings_take_no_defaults_of_their_own():
    """Every field of every settings class (TrainSettings, FieldConfig, RenderSettings, HullSettings,
    SamplerSettings, Guidance, FeedbackSettings, ...) is either built from the config or declared a fixed
    part of the recipe with ``utils.settings.fixed``: a plain default would be a second, silent source."""
    import dataclasses

    from img2mesh.utils.settings import is_fixed

    classes = settings_classes()
    names = {cls.__name__ for cls in classes}
    assert {"TrainSettings", "FieldConfig", "RenderSettings", "HullSettings", "SamplerSettings", "Guidance",
            "FeedbackSettings"} <= names, names
    offenders = [f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls)
                 if (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
                 and not is_fixed(f)]
    assert not offenders, f"settings fields with a default of their own: {offenders}"


def test_settings_built_from_the_config_carry_the_configs_values():
    """A changed key reaches the settings object built from it (no field keeps a value of its own)."""
    from img2mesh.reconstruct.fields import FieldConfig
    from img2mesh.reconstruct.trainer import TrainSettings

    cfg = load_config(overrides=["reconstruct.feature_dim=48", "reconstruct.color_hidden=40",
                                 "reconstruct.color_layers=3", "reconstruct.view_input=direction",
                                 "reconstruct.appearance_dim=6", "reconstruct.color_loss=l1",
                                 "reconstruct.mask_margin=3", "reconstruct.pose_refine=false"]).reconstruct
    field = FieldConfig.from_config(cfg, 0.6, 16)
    assert (field.feature_dim, field.color_hidden, field.color_layers, field.view_input) == (48, 40, 3, "direction")
    assert (field.appearance_dim, field.appearance_views) == (6, 16)
    train = TrainSettings.from_config(cfg, seed=3)
    assert (train.color_loss, train.mask_margin, train.pose_refine, train.seed) == ("l1", 3, False, 3)


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
