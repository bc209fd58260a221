"""The residual stream's second moment per layer, and the covariance-matched null of residual steering.

``identify`` sums, in the forward that records everything else, the outer products ``x x^T`` of the residual stream
after each layer (``blocks.{l}.hook_resid_post``) over the counted tokens, in float64, **pooled over the run's
languages**; with the pooled token count and sum that gives the (centered, population) covariance ``Sigma_l`` of the
residual stream at each layer (:class:`ResidMoments`). The covariance is the total one over all recorded text: it
holds the variation between languages as well as within them, so the DiffMean's own direction has variance in it.

Stored in ``stats.safetensors`` (an open format; no pickle):

====================  =======  ===============  ==============================================================
tensor                dtype    shape            meaning
====================  =======  ===============  ==============================================================
``resid_pool_n``      int64    [1]              counted tokens pooled (every recorded language)
``resid_pool_sum``    float64  [L, d_model]     sum of ``x`` over them
``resid_pool_outer``  float64  [L, d, d]        sum of ``x x^T`` over them (symmetric)
====================  =======  ===============  ==============================================================

Memory: ``L x d_model^2 x 8`` bytes, pooled (Gemma-3-270M: 18 x 640^2 x 8 = 59 MB; per language it would be K times
that, which is why it is pooled). Each language's part (``RUN/partial/<lang>.safetensors``) holds its own
``resid_outer`` so that resume, ``--shard`` + ``merge`` and torchrun add up as for the other sums.

Two nulls for ``resid:L*a`` (:func:`draw_matched`, :func:`draw_isotropic`):

* ``control:resid:L*a`` (**covariance-matched**): ``r ~ N(0, Sigma_L)``, scaled so that its Mahalanobis norm
  ``sqrt(r^T Sigma_L^-1 r)`` equals the DiffMean's. It measures *a push of this size along directions the residual
  actually varies in*: the null for "is it the language direction, or any typical direction of this size?".
* ``control-iso:resid:L*a`` (**isotropic**): a uniformly random direction with the DiffMean's Euclidean norm. It
  measures *any push of this size*; on an anisotropic residual stream (Gemma-3) most such directions are ones the
  model never sees, so it mostly measures breakage.

Stability: ``Sigma + ridge I`` with ``ridge = RIDGE x trace(Sigma) / d`` (1e-6 of the mean variance), eigenvalues
clamped at 0 before; the whitening and the draw use the same ridged matrix, so the Mahalanobis norms match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_steer.errors import LensSteerError

RIDGE = 1e-6  # relative to the mean variance trace(Sigma) / d
TENSOR_NAMES = ("resid_pool_n", "resid_pool_sum", "resid_pool_outer")
NO_COV = ("these statistics have no residual covariance (recorded before lens_steer kept it, or with"
          " --no-resid-cov); record the run again with `lens-steer identify` for control:resid:, or use"
          " control-iso:resid: (the isotropic null)")


@dataclass
class ResidMoments:
    """Pooled first and second moments of the residual stream after each layer (see the module docstring)."""

    n: Int[Tensor, " 1"]
    total: Float[Tensor, "layer d_model"]
    outer: Float[Tensor, "layer d_model d_model"]

    def __add__(self, other: ResidMoments) -> ResidMoments:
        return ResidMoments(self.n + other.n, self.total + other.total, self.outer + other.outer)

    def covariance(self, layer: int) -> Float[Tensor, "d_model d_model"]:
        """The centered (population) covariance of the residual stream after ``layer``, float64."""
        n = max(int(self.n.sum()), 1)
        mean = self.total[layer] / n
        cov = self.outer[layer] / n - torch.outer(mean, mean)
        return (cov + cov.T) / 2

    def tensors(self) -> dict[str, Tensor]:
        """The tensors of ``stats.safetensors`` (:data:`TENSOR_NAMES`)."""
        return {"resid_pool_n": self.n.to(torch.int64).reshape(1).contiguous(),
                "resid_pool_sum": self.total.to(torch.float64).contiguous(),
                "resid_pool_outer": self.outer.to(torch.float64).contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], layers: int, where: str) -> ResidMoments | None:
        """The moments stored in a statistics file (None when absent: a run recorded before them)."""
        found = [name for name in TENSOR_NAMES if name in tensors]
        if not found:
            return None
        n, total, outer = (tensors.get(name) for name in TENSOR_NAMES)
        ok = (len(found) == 3 and n.shape == (1,) and n.dtype == torch.int64 and total.ndim == 2
              and total.shape[0] == layers and outer.shape == (layers, total.shape[1], total.shape[1])
              and total.dtype == outer.dtype == torch.float64)
        if not ok:
            raise LensSteerError(f"{where}: the residual covariance tensors ({', '.join(found)}) do not fit together"
                                 f" ({layers} layers expected); re-run `lens-steer identify`")
        return cls(n, total, outer)


@dataclass(frozen=True)
class Whitening:
    """The eigen-decomposition of one layer's ridged covariance: ``Sigma + ridge I = U diag(values) U^T``."""

    vectors: Float[Tensor, "d_model d_model"]
    values: Float[Tensor, " d_model"]

    @classmethod
    def of(cls, cov: Float[Tensor, "d_model d_model"], ridge: float = RIDGE) -> Whitening:
        values, vectors = torch.linalg.eigh(cov.double())
        values = values.clamp(min=0)
        return cls(vectors, values + ridge * float(values.sum()) / max(values.numel(), 1) + 1e-300)

    def mahalanobis(self, v: Float[Tensor, " d_model"]) -> float:
        """``sqrt(v^T (Sigma + ridge I)^-1 v)``."""
        return float(((self.vectors.T @ v.double()) / self.values.sqrt()).norm())


def draw_matched(direction: Float[Tensor, " d_model"], whitening: Whitening,
                 generator: torch.Generator) -> Float[Tensor, " d_model"]:
    """A draw of ``N(0, Sigma)`` scaled to the Mahalanobis norm of ``direction``: ``r = U sqrt(values) z`` with
    ``z ~ N(0, I)`` has Mahalanobis norm ``|z|``, so ``r * M(direction) / |z|`` has exactly ``M(direction)``."""
    z = torch.randn(direction.numel(), generator=generator, dtype=torch.float64)
    r = whitening.vectors @ (whitening.values.sqrt() * z)
    return (r * (whitening.mahalanobis(direction) / float(z.norm()))).to(direction.dtype)


def draw_isotropic(direction: Float[Tensor, " d_model"], generator: torch.Generator) -> Float[Tensor, " d_model"]:
    """A uniformly random direction with the Euclidean norm of ``direction``."""
    noise = torch.randn(direction.shape, generator=generator)
    return noise / noise.norm() * direction.norm()
