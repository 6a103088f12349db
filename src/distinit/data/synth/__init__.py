"""The synthetic world: stills, an unlabeled video corpus and an action set, rendered on CPU."""

from distinit.data.synth.generate import generate_world
from distinit.data.synth.world import SIZES, World, WorldError, WorldSize, load_world

__all__ = ["SIZES", "World", "WorldError", "WorldSize", "generate_world", "load_world"]
