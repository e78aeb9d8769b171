"""3D-aware feedback during sampling: ``generate``'s sampler with ``reconstruct``'s field in the loop.

A composition of two stages' libraries, above both: the generate stage calls the hook the
application wires in (``generate.stage.run``'s ``feedback``), and this package builds it from
``reconstruct``'s field, trainer and hull start (``operator.py``). Neither stage imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from img2mesh.feedback.operator import SamplingFeedback
    from img2mesh.pipeline.contract import StageContext


def sampling_feedback(ctx: "StageContext", model: Any, sets: int, device: Any) -> Optional["SamplingFeedback"]:
    """The hook for ``generate.feedback.*``, or None when it is off; it keeps each feedback step's
    renders as ``sample_K/feedback/step_SS.png`` (one strip of the 16 views)."""
    from img2mesh.feedback.operator import FeedbackSettings, SamplingFeedback
    from img2mesh.generate.sets import set_name
    from img2mesh.utils.files import atomic_save_image
    from img2mesh.utils.images import grid

    settings = FeedbackSettings.from_config(ctx.config)
    if not settings.enabled:
        return None
    ctx.log.info("generate: 3D feedback at DDIM steps %s, weight %.2f, %d fitting steps each",
                 sorted(settings.steps), settings.weight, settings.fit_steps)

    def keep(step: int, k: int, renders: Any) -> None:
        atomic_save_image(ctx.out_dir / set_name(k) / "feedback" / f"step_{step:02d}.png", grid(renders, len(renders)))

    return SamplingFeedback(model, settings, sets, ctx.config.run.seed, device, keep)
