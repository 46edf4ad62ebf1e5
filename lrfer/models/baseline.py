"""Plain low-resolution baseline: the ablation of GME-Net.

The same stem and three residual stages as :class:`lrfer.models.gmenet.GMENet`, with the hybrid
attention and the multi-scale global module switched off, trained on low-resolution faces alone (no
teacher, no distillation). Comparing it with GME-Net at the same resolution measures what the paper's
attention, global module and distillation add.
"""
from __future__ import annotations

from lrfer.models.gmenet import GMENet


def baseline(
    num_classes: int = 7,
    in_chans: int = 1,
    width: int = 32,
    input_size: int = 16,
    blocks_per_stage: int = 1,
    drop_rate: float = 0.2,
) -> GMENet:
    """The GME-Net student backbone without attention or global module."""
    return GMENet(num_classes, in_chans, width, input_size, blocks_per_stage, 0, False, False, drop_rate)
