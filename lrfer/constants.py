"""Constants shared by the whole zoo: one class order, one grayscale normalisation."""
from __future__ import annotations

#: The zoo's single class order (FER2013's own label order). RAF-DB labels are mapped onto it.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: FER2013 training-set grey-level statistics (0..1 scale), rounded.
GRAY_MEAN: float = 0.5
GRAY_STD: float = 0.25

#: Side of the canonical high-resolution face crop: FER2013's own 48x48 framing.
HR_SIZE: int = 48
