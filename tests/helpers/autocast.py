"""CUDA autocast's op policy, emulated on the CPU, so that CUDA-only precision bugs fail a CPU test.

``torch.autocast("cuda")`` casts the inputs of the ops on its lower-precision list to float16 or
bfloat16, runs the ops on its float32 list in float32, gives the ops on its promote list their
widest input type, and leaves every other op alone: those see what they are given. CPU autocast
has another policy (it has a float32 rule for ``torch.inverse``, for one), so running the CUDA code
path under CPU autocast proves nothing about CUDA.

:class:`CudaAutocastEmulation` applies the CUDA lists (PyTorch's AMP op reference: "CUDA ops that
can autocast to float16 / to float32 / that promote") as a ``TorchFunctionMode``: like autocast, it
acts on the named ops (``conv2d``, ``linear``, ``matmul``, ``group_norm``, ``softmax``, ...) before
they are decomposed, so their own dtype checks see the cast inputs, as they do on a GPU.

:class:`EmulatedCudaPrecision` is a :class:`~img2mesh.generate.precision.Precision` whose autocast
region is this emulation: the sampler runs exactly the code it runs on a GPU.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from img2mesh.generate.precision import Precision

LOWER_PRECISION = {
    "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "prelu", "addmm", "addmv", "addr", "matmul", "__matmul__", "__rmatmul__", "einsum", "mm", "mv",
    "linalg_vecdot", "vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul", "multi_dot",
    "scaled_dot_product_attention",
}
FLOAT32 = {
    "__pow__", "__rpow__", "__rtruediv__", "__rdiv__", "acos", "asin", "cosh", "erfinv", "exp", "expm1",
    "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm",
    "group_norm", "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss",
    "cosine_embedding_loss", "nll_loss", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss",
    "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist",
    "renorm", "logsumexp", "prod", "softmax", "log_softmax", "softmin", "cumprod", "cumsum", "vector_norm",
    "matrix_norm", "sum", "norm", "normalize",
}
PROMOTE = {
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sample", "index_put",
    "scatter_add", "tensordot", "index_copy",
}
REDUCED = (torch.float16, torch.bfloat16)


def _cast(tree: Any, wants: Callable[[torch.Tensor], bool], dtype: torch.dtype) -> Any:
    return tree_map(lambda a: a.to(dtype) if isinstance(a, torch.Tensor) and wants(a) else a, tree)


class CudaAutocastEmulation(TorchFunctionMode):
    """The CUDA autocast policy for ``dtype``, applied on whatever device the tensors are on.

    ``counts`` tallies the ops that ran under each rule, so a test can check the emulation acted.
    """

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.dtype = dtype
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in LOWER_PRECISION:
            # Inputs rounded to the reduced dtype, products accumulated in float32, the result stored in
            # the reduced dtype: what a GPU's half-precision GEMM/convolution does, without the CPU's
            # slow half-precision kernels.
            self.counts["lower"] += 1
            floats = lambda t: t.is_floating_point() and t.dtype != torch.float64  # noqa: E731
            args, kwargs = _cast(_cast((args, kwargs), floats, self.dtype), floats, torch.float32)
            return _cast(func(*args, **kwargs), floats, self.dtype)
        if name in FLOAT32 and kwargs.get("dtype") is None:
            self.counts["float32"] += 1
            args, kwargs = _cast((args, kwargs), lambda t: t.dtype in REDUCED, torch.float32)
        elif name in PROMOTE:
            floats = {a.dtype for a in tree_flatten((args, kwargs))[0]
                      if isinstance(a, torch.Tensor) and a.is_floating_point()}
            if len(floats) > 1:
                self.counts["promote"] += 1
                args, kwargs = _cast((args, kwargs), lambda t: t.is_floating_point(), torch.float32)
        return func(*args, **kwargs)


@dataclass(frozen=True)
class EmulatedCudaPrecision(Precision):
    """A reduced :class:`Precision` whose region is :class:`CudaAutocastEmulation` instead of torch.autocast."""

    emulations: list = field(default_factory=list, compare=False)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:  # type: ignore[override]
        mode = CudaAutocastEmulation(self.dtype)
        self.emulations.append(mode)
        with mode:
            yield

    def counts(self) -> Counter[str]:
        """What every region entered so far ran, by policy."""
        return sum((m.counts for m in self.emulations), Counter())
