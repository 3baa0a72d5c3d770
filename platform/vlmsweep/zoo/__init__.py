"""zoo layer of vlmsweep: tiny pretrained components (tokenizer, LMs, vision encoders)
built on the offline world and loadable as the checkpoint "zoo:<name>"."""

from .build import build_zoo

__all__ = ["build_zoo"]
