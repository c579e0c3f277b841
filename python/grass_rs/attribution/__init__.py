"""Attribution from compressed gradients: the block Fisher (:mod:`.fim`), influence scores
(:mod:`.influence`), TRAK (:mod:`.trak`), the crash-safe gradient store (:mod:`.store`), the
end-to-end :class:`Attributor` (:mod:`.attributor`) and torch.distributed helpers
(:mod:`.distributed`)."""

from __future__ import annotations

from .attributor import Attributor, sum_cross_entropy
from .fim import BlockFisher, FisherBlock
from .influence import influence_scores, top_k
from .store import GradientStore
from .trak import TRAK, trak_scores

__all__ = [
    "TRAK",
    "Attributor",
    "BlockFisher",
    "FisherBlock",
    "GradientStore",
    "influence_scores",
    "sum_cross_entropy",
    "top_k",
    "trak_scores",
]
