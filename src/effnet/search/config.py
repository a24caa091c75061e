"""What defines a grid search: the base network, the grid, the MAC budget and the proxy recipe."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ParameterError
from ..proxy.candidates import Scaled
from ..proxy.trainer import ProxyRecipe
from ..scaling import CompoundScaling
from .grid import GridPoint, enumerate_grid

DEFAULT_STUDY = "effnet-search"
KIND = "grid-search"  # the identity of a grid-search study says so (one storage holds many)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search: a stored study only resumes with the same config.

    The base network is ``BASELINES[base]`` scaled by (`base_width`,
    `base_depth`) at `image_size` (1, 1 and 224 in the paper; a smaller base
    makes a cheaper proxy). Each grid point (paper Eq. 3, phi = 1) is trained
    with the proxy `recipe` for `seeds` seeds. A candidate whose measured MACs
    are more than `mac_tolerance` (a fraction) away from `target` x the
    base's is recorded but not trained; None trains every candidate. The
    number of classes and input channels come from the data.
    """

    base: str = "b0"
    dataset: str = "fashion-mnist"
    image_size: int = 16
    base_width: float = 1.0
    base_depth: float = 1.0
    grid_step: float = 0.05
    target: float = 2.0
    tolerance: float = 0.1
    max_value: float | None = None
    seeds: int = 2
    recipe: ProxyRecipe = field(default_factory=ProxyRecipe)
    mac_tolerance: float | None = 0.25

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ParameterError(f"seeds must be >= 1, got {self.seeds}", "seeds")
        if self.image_size < 8:
            raise ParameterError(f"image_size must be >= 8, got {self.image_size}", "image_size")
        if self.mac_tolerance is not None and self.mac_tolerance < 0:
            raise ParameterError("mac_tolerance must be >= 0", "mac_tolerance")

    def points(self) -> list[GridPoint]:
        """The grid points: (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ target."""
        return enumerate_grid(self.grid_step, self.target, self.tolerance, self.max_value)

    def identity(self) -> dict[str, Any]:
        """The JSON-able settings stored with the study (and marked as a grid search)."""
        return {"kind": KIND, **json.loads(json.dumps(asdict(self)))}

    def scaled(self, point: GridPoint, phi: float = 1.0) -> Scaled:
        """The base scaled by `point` at `phi` (paper Eq. 3)."""
        c = CompoundScaling(point.alpha, point.beta, point.gamma).coefficients(phi,
                                                                              self.image_size)
        return Scaled(self.base, self.base_width * c.width_mult, self.base_depth * c.depth_mult,
                      c.resolution)

    def base_scaled(self) -> Scaled:
        """The base network itself (every grid point at phi = 0)."""
        return Scaled(self.base, self.base_width, self.base_depth, self.image_size)
