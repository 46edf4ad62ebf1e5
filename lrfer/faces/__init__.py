"""Face detection and alignment: :func:`make_detector` -> :class:`Detections` -> :func:`align_faces`.

Submodules import torch lazily enough for ``import lrfer`` to stay fast; importing this package
imports torch (but builds no network and reads no weights).
"""
from lrfer.faces.align import FER2013_FACE_BOX, FER2013_TEMPLATE, align_faces, estimate_similarity, rgb_to_gray
from lrfer.faces.detect import Detections, Detector, make_detector

__all__ = [
    "FER2013_FACE_BOX",
    "FER2013_TEMPLATE",
    "Detections",
    "Detector",
    "align_faces",
    "estimate_similarity",
    "make_detector",
    "rgb_to_gray",
]
