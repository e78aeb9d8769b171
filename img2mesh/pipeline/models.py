"""Models that stages load, owned by the runner rather than by module globals.

A stage asks ``ctx.models.get(name, key, load, device)`` for a model; the first call loads it, later
calls with the same key get the same object. The runner knows which stages are still to come for
the current input (each :class:`~img2mesh.pipeline.contract.Stage` names the models it uses), so
after every stage it releases what no later stage needs: when more inputs of a batch follow, the
model is *parked* (moved to the CPU, kept for the next input, moved back on its next ``get``);
otherwise it is dropped and its GPU memory returned. ``close()`` drops everything.

A cached object is anything with a ``to(device)`` method that moves it and returns it (a
``torch.nn.Module``, or a small holder around one).
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Collection, Hashable, TypeVar

log = logging.getLogger("img2mesh")
T = TypeVar("T")
PARK_DEVICE = "cpu"


@dataclass
class _Entry:
    key: Hashable
    model: Any
    device: str
    parked: bool = False


def _return_freed_memory() -> None:
    """Give freed CUDA blocks back so that the next stage (or another process) can use them."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelCache:
    """Loaded models by name, one version (key) per name."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def get(self, name: str, key: Hashable, load: Callable[[], T], device: str) -> T:
        """The model ``name`` for ``key`` on ``device``: cached, un-parked, or loaded by ``load()``."""
        entry = self._entries.get(name)
        if entry is not None and (entry.key != key or entry.device != device):
            self.drop(name)
            entry = None
        if entry is None:
            entry = self._entries[name] = _Entry(key, load(), device)
        elif entry.parked:
            log.debug("models: moving %s back to %s", name, device)
            entry.model = entry.model.to(device)
            entry.parked = False
        return entry.model

    def loaded(self) -> dict[str, str]:
        """Every cached model and where it is: its device, or ``parked``."""
        return {name: "parked" if e.parked else e.device for name, e in self._entries.items()}

    def release(self, keep: Collection[str], park: bool) -> None:
        """Move off the GPU every model not in ``keep``: parked on the CPU if ``park``, else dropped."""
        released = False
        for name in [n for n in self._entries if n not in keep]:
            entry = self._entries[name]
            if not park:
                self.drop(name)
            elif not entry.parked and entry.device != PARK_DEVICE:
                log.debug("models: parking %s on the CPU until the next input", name)
                entry.model = entry.model.to(PARK_DEVICE)
                entry.parked = released = True
        if released:
            _return_freed_memory()

    def drop(self, name: str) -> None:
        """Forget model ``name`` (its memory is freed once nothing else holds it)."""
        if self._entries.pop(name, None) is not None:
            log.debug("models: released %s", name)
            _return_freed_memory()

    def close(self) -> None:
        """Drop every model."""
        for name in list(self._entries):
            self.drop(name)
