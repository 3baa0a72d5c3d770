"""The synthetic visual world: scenes of coloured shapes, captions and an instruction mix.

Stands in for LLaVA-558K (short captions), ShareGPT4V (detailed captions of the same
images) and LLaVA's 665K instruction mix, so the whole pipeline runs offline.
"""

from .build import WORLD_SIZES, build_world

__all__ = ["WORLD_SIZES", "build_world"]
