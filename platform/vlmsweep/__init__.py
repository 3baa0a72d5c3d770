"""vlmsweep: ablation grids of small LLaVA-style vision-language models on Ray.

Layers import one way: config <- models <- data <- train <- eval <- sweep <- cli.
"""

__version__ = "0.1.0"

# `<image>` marks where an image goes in a conversation turn (LLaVA's convention).
IMAGE_MARKER = "<image>"
