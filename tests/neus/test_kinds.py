"""The field kinds and the keys that size a field have one place each (``img2mesh/neus/``)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from img2mesh.neus.keys import FIELD_KEYS, FieldKeys
from img2mesh.neus.kinds import FIELD_KINDS, FieldName, field_kind

PACKAGE = Path(__file__).resolve().parents[2] / "img2mesh"


def test_the_configs_choices_are_the_registry():
    from img2mesh.app import config_schema

    assert typing.get_args(FieldName) == tuple(FIELD_KINDS)
    schema = config_schema()
    for section in (typing.get_type_hints(schema)["reconstruct"],
                    typing.get_type_hints(typing.get_type_hints(schema)["generate"])["feedback"]):
        assert typing.get_args(typing.get_type_hints(section)["field"]) == tuple(FIELD_KINDS)


def test_no_module_outside_the_registry_names_a_field_kind():
    """Code asks the kind (field_kind(name).curvature, .backends, .encoding), never compares names."""
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.parent.name != "neus" and any(f'"{name}"' in p.read_text() for name in FIELD_KINDS)]
    assert offenders == []


def test_what_each_kind_implies():
    assert field_kind("hashgrid").curvature and field_kind("hashgrid").backends == ("tinycudann", "pytorch")
    assert not field_kind("mlp").curvature and field_kind("mlp").backends == () and field_kind("mlp").encoding is None


def test_feedback_has_reconstructs_field_keys_with_its_own_defaults():
    from img2mesh.generate.config import FeedbackConfig
    from img2mesh.reconstruct.config import ReconstructConfig

    feedback = {f.name: f for f in dataclasses.fields(FeedbackConfig)}
    reconstruct = {f.name: f for f in dataclasses.fields(ReconstructConfig)}
    assert set(FIELD_KEYS) <= set(feedback) and set(FIELD_KEYS) <= set(reconstruct)
    declared = {f.name: f for f in dataclasses.fields(FieldKeys)}
    for key in FIELD_KEYS:  # the same help and range, declared once
        assert feedback[key].metadata == reconstruct[key].metadata == declared[key].metadata
    assert FeedbackConfig().hidden == 64 and ReconstructConfig().hidden == 256
