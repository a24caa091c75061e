"""How a candidate baseline is scored: the scaling study's proxy, shared by the search.

A candidate is a full-size baseline (like B0 in paper Table 1). To score it
on two CPU cores it is scaled down the way the study's B0 base is (width
0.25, depth 0.6 with :func:`effnet.scaling.scale`, stem stride 1, Fashion-MNIST
at 14 px) and trained with one short proxy recipe
(:func:`effnet.search.trainer.train_proxy`); its MACs are measured on that
built model (:func:`effnet.profile.count_macs`), never estimated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..scaling import scale
from ..search.candidates import Cost
from ..search.trainer import Recipe
from ..spec import NetworkSpec

# Two epochs over a fixed 8,000-image subset, evaluated 4 times on the whole validation split.
NAS_RECIPE = Recipe(epochs=2, evals=4, train_size=8000)


@dataclass(frozen=True)
class Proxy:
    """The small stand-in of every candidate: scale, stem stride, resolution, data and recipe.

    The defaults are the scaling study's B0 base (`effnet study`, presets
    quick and standard), on an 8,000-image subset so that a candidate trains
    in tens of seconds on one core (measured times: results/nas-quick).
    """

    dataset: str = "fashion-mnist"
    width: float = 0.25
    depth: float = 0.6
    stem_stride: int = 1
    resolution: int = 14
    recipe: Recipe = field(default_factory=lambda: NAS_RECIPE)

    def spec(self, baseline: NetworkSpec) -> NetworkSpec:
        """`baseline` scaled down to the proxy (paper Eq. 3 rounding rules), stem stride set."""
        return scale(baseline, self.width, self.depth).with_(stem_stride=self.stem_stride)

    def build(self, baseline: NetworkSpec, num_classes: int = 10, in_chans: int = 1):
        """The proxy module of `baseline`, freshly initialised (seed torch first).

        Same settings as the study's and the grid search's models
        (:meth:`effnet.search.candidates.Scaled.build`).
        """
        from ..nn.model import EfficientNet

        return EfficientNet(self.spec(baseline), num_classes=num_classes, in_chans=in_chans,
                            drop_rate=0.1, drop_path_rate=0.05, bn_momentum=0.1)

    def measure(self, baseline: NetworkSpec, num_classes: int = 10, in_chans: int = 1) -> Cost:
        """Parameters and MACs of the proxy model, counted on the built module.

        Built on the CPU, not the meta device: for models this small a real
        forward pass is about 3x faster than shape propagation.
        """
        import torch

        from ..profile import count_macs, count_params

        with torch.device("cpu"):
            model = self.build(baseline, num_classes, in_chans)
            return Cost(params=count_params(model), macs=count_macs(model, self.resolution))

    def identity(self) -> dict:
        """JSON-able settings (a stored search resumes only with the same ones)."""
        return json.loads(json.dumps(asdict(self)))
