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

# Derived by scripts/derive_fer2013_template.py on 2026-11-25: lrfer's MTCNN (min_face=48, thresholds
# 0.6/0.7/0.7) on the first 2,000 FER2013 training faces, upscaled x4 (bicubic) to 192x192 and
# gray -> RGB; the most confident detection of each face kept when its score >= 0.95 (1,532 faces);
# per-coordinate medians divided by 4. Median distance of a face's landmark to its template point:
# 2.7 px (eyes) to 3.4 px (nose). Re-run the script to re-derive. (Plain numbers here, so that
# ``lrfer.info`` describes the framing without importing torch; lrfer.faces.align makes the tensors.)
#: The five landmarks of :data:`FER2013_LANDMARKS`, in order.
LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: Five landmarks of a typical FER2013 face, in 48x48 pixel coordinates (``lrfer.faces.FER2013_TEMPLATE``).
FER2013_LANDMARKS: tuple[tuple[float, float], ...] = (
    (15.26, 18.52),
    (33.07, 18.20),
    (24.01, 28.51),
    (17.25, 37.40),
    (31.47, 37.25),
)
#: Median MTCNN box ``x1, y1, x2, y2`` of a FER2013 face in the 48x48 frame (same derivation: centre
#: (23.4, 23.9), 38.4 x 48.8 px); the framing of faces without landmarks (``lrfer.faces.FER2013_FACE_BOX``).
FER2013_BOX: tuple[float, float, float, float] = (4.22, -0.50, 42.66, 48.25)
#: The down-sampling of a 48x48 aligned face to a model's native resolution at inference and evaluation
#: (``lrfer.faces.degrade.to_native``; training draws it among several, see ``lrfer.faces.degrade``).
NATIVE_DOWNSAMPLING: str = "area"

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
