"""Synthetic LISS-IV-like scenes: the embedded default data set."""

from rareseg.synth.confusers import CONFUSERS, check_confusers
from rareseg.synth.preview import false_colour, write_preview
from rareseg.synth.scene import CLASSES, SyntheticScene, generate_dataset, generate_scene

__all__ = [
    "CLASSES",
    "CONFUSERS",
    "SyntheticScene",
    "check_confusers",
    "false_colour",
    "generate_dataset",
    "generate_scene",
    "write_preview",
]
