"""Test-only stages that record what they did, and digests of an output folder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Optional

from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.utils.files import atomic_write_text


def snapshot(folder: Path, with_log: bool = False) -> dict[str, str]:
    """Every file under ``folder`` with the digest of its content (empty when absent).

    The run log is left out unless asked for: refusing an input appends the reason to it.
    """
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (with_log or p.name != "img2mesh.log")
    }


class Recorder:
    """Test-only stages that record how often they ran and what they saw."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.resumed: dict[str, bool] = {}
        self.fail: dict[str, BaseException] = {}

    def stage(self, name: str, reads: tuple[str, ...] = (), keys: tuple[str, ...] = (),
              publish: tuple[str, ...] = (), body: Optional[Callable[[StageContext], None]] = None,
              check_input: Optional[Callable] = None) -> Stage:
        def run(ctx: StageContext) -> dict[str, Any]:
            self.calls.append(name)
            self.resumed[name] = ctx.resumed
            upstream = "".join((ctx.stage_dir(r) / "out.txt").read_text() for r in reads)
            atomic_write_text(ctx.out_dir / "out.txt", f"{upstream}{name}({','.join(str(ctx.config.get(k)) for k in keys)});")
            if body is not None:
                body(ctx)
            if name in self.fail:
                raise self.fail[name]
            return {"ran": name}

        return Stage(name=name, description=f"test stage {name}", reads=reads, outputs=("out.txt",),
                     config_keys=keys, run=run, publish=publish, check_input=check_input)

    def chain(self) -> list[Stage]:
        """a -> b -> c, each depending on one config key (keys from the real schema).

        ``a`` validates the input as the real first stage does.
        """
        from img2mesh.segment.stage import check_input

        return [
            self.stage("a", keys=("segment.crop_size",), check_input=check_input),
            self.stage("b", reads=("a",), keys=("generate.steps",)),
            self.stage("c", reads=("b",), keys=("mesh.resolution",), publish=("out.txt",)),
        ]
