"""How a candidate baseline is scored: the scaling study's proxy, shared by the search.

A candidate is a full-size baseline (like B0 in paper Table 1). To score it
on two CPU cores it is scaled down the way the study's B0 base is (width
0.25, depth 0.6 with :func:`effnet.scaling.scale`, stem stride 1, Fashion-MNIST
at 14 px) and trained with one short proxy recipe
(:func:`effnet.proxy.trainer.train_proxy`); its MACs are measured on that
built model (:func:`effnet.proxy.candidates.measure`), never estimated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..proxy.candidates import Cost, Scaled, measure
from ..proxy.trainer import ProxyRecipe
from ..spec import NetworkSpec

if TYPE_CHECKING:
    from ..nn.model import EfficientNet

# One epoch over all the training images (54,000 of Fashion-MNIST), evaluated 6 times on the
# whole validation split: successive halving judges its rungs at evaluations 2 and 6 (issue 19:
# 2 epochs on 8,000 images gave a seed SD as large as the spread between architectures).
NAS_RECIPE = ProxyRecipe(epochs=1, evals=6, train_size=None)
# The earlier, 3.4x cheaper recipe (2 epochs on a fixed 8,000-image subset): `effnet autoscale`
# trains its grid search and family with it.
SHORT_RECIPE = ProxyRecipe(epochs=2, evals=4, train_size=8000)


@dataclass(frozen=True)
class Proxy:
    """The small stand-in of every candidate: scale, stem stride, resolution, data and recipe.

    The defaults are the scaling study's B0 base (`effnet study`, presets
    quick and standard), trained one epoch on all the training images (about
    a minute per candidate on one AVX2 core).
    """

    dataset: str = "fashion-mnist"
    width: float = 0.25
    depth: float = 0.6
    stem_stride: int = 1
    resolution: int = 14
    recipe: ProxyRecipe = field(default_factory=lambda: NAS_RECIPE)

    def scaled(self, baseline: NetworkSpec, width_mult: float = 1.0, depth_mult: float = 1.0,
               resolution: int | None = None) -> Scaled:
        """`baseline` at the proxy's scale (times `width_mult`, `depth_mult`), stem stride set."""
        return Scaled(baseline, self.width * width_mult, self.depth * depth_mult,
                      resolution or self.resolution, self.stem_stride)

    def spec(self, baseline: NetworkSpec) -> NetworkSpec:
        """`baseline` scaled down to the proxy (paper Eq. 3 rounding rules), stem stride set."""
        return self.scaled(baseline).spec()

    def build(self, baseline: NetworkSpec, num_classes: int = 10,
              in_chans: int = 1) -> EfficientNet:
        """The proxy module of `baseline`, freshly initialised (seed torch first)."""
        return self.scaled(baseline).build(num_classes, in_chans)

    def measure(self, baseline: NetworkSpec, num_classes: int = 10, in_chans: int = 1) -> Cost:
        """Parameters and MACs of the proxy model, counted on the module built on the CPU."""
        return measure(self.scaled(baseline), num_classes, in_chans, device="cpu")

    def identity(self) -> dict:
        """JSON-able settings (a stored search resumes only with the same ones)."""
        return json.loads(json.dumps(asdict(self)))
