"""Constants shared by the whole zoo: one class order, one grayscale normalisation, one CPU budget."""
from __future__ import annotations

#: The zoo's single class order (FER2013's own label order). RAF-DB labels are mapped onto it.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: FER2013 training-set grey-level statistics (0..1 scale), rounded.
GRAY_MEAN: float = 0.5
GRAY_STD: float = 0.25

#: Side of the canonical high-resolution face crop: FER2013's own 48x48 framing.
HR_SIZE: int = 48

#: Face framings the pipeline can make (a spec's ``alignment``). Only FER2013's: a model trained on
#: other crops would be fed faces framed unlike its training faces, so its spec is refused.
ALIGNMENTS: tuple[str, ...] = ("fer2013",)

#: On CPU, a network call keeps its largest feature map within this many floats (8 MiB): larger maps
#: leave the cache (and above glibc's 32 MB mmap threshold are fresh, page-faulted mappings). Sets the
#: expression model's faces per call and the detectors' bands and crops per call.
CPU_ACTIVATION_BUDGET: int = 1 << 21

#: RAF-DB's splits: the prefix of each file name in its label list (``train_00001.jpg``).
RAF_SPLITS: tuple[str, ...] = ("train", "test")

#: How a GME-Net student learns the 48 px teacher's attention (``Recipe.attention_distillation``,
#: ``lrfer train --attention-distillation``): attention transfer of stage outputs, or ASKD.
ATTENTION_DISTILLATIONS: tuple[str, ...] = ("activation", "askd")

#: The smallest ``min_face`` of every detector (``lrfer predict --min-face``): the zoo's smallest native
#: resolution. Below P-Net's 12 px window (``mtcnn.PNET_WINDOW``) MTCNN's pyramid adds one level above
#: scale 1, the photo enlarged (bilinear) 12 / min_face times: 1.5 at the most.
MIN_FACE_PX = 8
