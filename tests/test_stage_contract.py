"""The contract every registered stage keeps, and adding a stage with its own package plus one line.

For every stage ``img2mesh.app`` registers: its config section round-trips (defaults -> YAML -> load),
its config keys resolve, its weights are named and say where they come from, it declares outputs and
reads only earlier stages, and its report panel renders on an empty and on a finished run folder.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import pytest
import yaml

from img2mesh import app
from img2mesh.pipeline.config import _build, config_keys

STAGES = app.registered_stages()


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_every_stage_keeps_the_contract(stage, tmp_path):
    names = [s.name for s in STAGES]
    assert names.count(stage.name) == 1 and stage.outputs and stage.description
    assert all(names.index(read) < names.index(stage.name) for read in stage.reads), stage.reads
    schema = app.config_schema()
    config = schema()
    for key in stage.config_keys:  # every key or section it depends on exists
        config.get(key)
    if stage.config is not None:
        section = stage.config()
        data = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(section)))
        assert _build(stage.config, data, f"{stage.name}.") == section  # the section round-trips through YAML
        assert any(key.startswith(f"{stage.name}.") for key in config_keys(schema))
    for entry in stage.weights(config) if stage.weights is not None else ():
        assert entry.name and entry.description and entry.size and entry.source()
        entry.locate()  # never downloads, never raises
    if stage.report is not None:
        assert stage.report(tmp_path, {}) == ""  # nothing made yet: no panel


def test_the_weights_registry_names_each_file_once():
    names = [entry.name for entry in app.weight_registry()]
    assert len(names) == len(set(names)) and {"syncdreamer", "tracer_b7", "fba", "loftr", "sd2_depth"} <= set(names)


TOY = '''
from dataclasses import dataclass

from img2mesh.pipeline.config import Section, setting
from img2mesh.pipeline.contract import Stage
from img2mesh.utils.weights import HubFile, HubWeight


@dataclass
class ToyConfig(Section):
    greeting: str = setting("hello", "what the toy writes")
    times: int = setting(1, "how often", minimum=1)


def run(ctx):
    (ctx.out_dir / "toy.txt").write_text(ctx.config.toy.greeting * ctx.config.toy.times)


def panel(run_dir, records):
    made = run_dir / "toy" / "toy.txt"
    return f"<h2>Toy</h2><p>{made.read_text()}</p>" if made.is_file() else ""


STAGE = Stage(name="toy", description="a toy stage", reads=(), outputs=("toy.txt",), config_keys=("toy",), run=run,
              config=ToyConfig, report=panel,
              weights=lambda config: [HubWeight("toy_weights", "toy weights", "toy", "1 kB",
                                                (HubFile("model", "someone/toy", "toy.bin"),), "--nothing")])
'''


def test_a_new_stage_is_its_own_module_plus_one_line_of_assembly(tmp_path, monkeypatch):
    """A toy stage in its own module, registered by one line (``STAGE_MODULES``): the config gains its
    section (defaults, ``--set``, validation), the registry its weights, ``img2mesh stages`` lists it
    and the report shows its panel; nothing else is touched."""
    from typer.testing import CliRunner

    from img2mesh.cli import app as cli
    from img2mesh.errors import UsageError
    from img2mesh.pipeline.runner import Runner
    from img2mesh.report.page import write_report

    package = tmp_path / "toypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stage.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(app, "STAGE_MODULES", (*app.STAGE_MODULES, "toypkg.stage"))  # the one line
    app.config_schema.cache_clear()
    try:
        config = app.load_config(overrides=["toy.times=3"])
        assert config.toy.greeting == "hello" and config.toy.times == 3
        with pytest.raises(UsageError, match="toy.times: must be at least 1"):
            app.load_config(overrides=["toy.times=0"])
        assert "toy_weights" in [w.name for w in app.weight_registry()]
        listed = CliRunner().invoke(cli, ["stages"])
        assert listed.exit_code == 0 and "a toy stage" in listed.stdout
        toy = sys.modules["toypkg.stage"].STAGE
        image = tmp_path / "in.png"
        image.write_bytes(b"not read by the toy")
        result = Runner([toy], config, "cpu").run(image, tmp_path / "out")
        assert result.ok and (tmp_path / "out" / "toy" / "toy.txt").read_text() == "hellohellohello"
        assert "<h2>Toy</h2><p>hellohellohello</p>" in write_report(tmp_path / "out", [toy]).read_text()
    finally:
        app.config_schema.cache_clear()
