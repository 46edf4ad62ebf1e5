"""Derive ``FER2013_LANDMARKS`` / ``FER2013_BOX`` (lrfer/constants.py) from FER2013 itself.

FER2013's faces are already cropped to 48x48; lrfer aligns detected faces to the same framing by
mapping their MTCNN landmarks onto the typical MTCNN landmarks of a FER2013 face. This script measures
that typical face: it upscales training faces x4 (bicubic, gray -> RGB), runs lrfer's MTCNN, keeps
the most confident detection of each face when its score is high, and takes per-coordinate medians
of the five landmarks and of the box, scaled back to 48x48 pixel coordinates::

    PYTHONPATH=. python scripts/derive_fer2013_template.py --count 2000

The printed constants are pasted into lrfer/constants.py with the face count and date.
"""
from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lrfer.constants import HR_SIZE
from lrfer.faces.mtcnn import MTCNN

log = logging.getLogger("derive_fer2013_template")

DEFAULT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fer2013" / "fer2013-train.npz"
UPSCALE = 4
MIN_SCORE = 0.95
#: The face fills most of a FER2013 crop: search faces of at least a quarter of the upscaled side.
MIN_FACE = HR_SIZE * UPSCALE // 4
BATCH = 200


def upscale_to_rgb(gray: np.ndarray) -> torch.Tensor:
    """(N, 48, 48) uint8 gray -> (N, 3, 192, 192) uint8 RGB, bicubic."""
    x = torch.from_numpy(gray).float().unsqueeze(1)
    x = F.interpolate(x, scale_factor=UPSCALE, mode="bicubic", align_corners=False).clamp(0, 255).round()
    return x.to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def best_detections(detector: MTCNN, faces: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks (M, 5, 2) and boxes (M, 4), in 48x48 coordinates, of confident faces (one per image)."""
    points, boxes = [], []
    for start in range(0, len(faces), BATCH):
        images = list(upscale_to_rgb(faces[start : start + BATCH]))
        for det in detector.detect(images):
            if len(det) == 0 or float(det.scores.max()) < MIN_SCORE:
                continue
            best = int(det.scores.argmax())
            points.append(det.landmarks[best] / UPSCALE)
            boxes.append(det.boxes[best] / UPSCALE)
        log.info("%d / %d faces done, %d kept", min(start + BATCH, len(faces)), len(faces), len(points))
    return torch.stack(points), torch.stack(boxes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--count", type=int, default=2000, help="number of training faces (the first ones)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    faces = np.load(args.npz)["images"][: args.count]
    detector = MTCNN(min_face=MIN_FACE)
    points, boxes = best_detections(detector, faces)
    template = points.median(dim=0).values
    box = boxes.median(dim=0).values
    spread = (points - template).norm(dim=-1).median(dim=0).values

    print(f"# {len(points)} of {len(faces)} faces kept (score >= {MIN_SCORE}), {datetime.date.today()}")
    print("FER2013_LANDMARKS: tuple[tuple[float, float], ...] = (")
    for x, y in template.tolist():
        print(f"    ({x:.2f}, {y:.2f}),")
    print(")")
    print(f"FER2013_BOX: tuple[float, float, float, float] = ({', '.join(f'{v:.2f}' for v in box.tolist())})")
    print("# median distance of each landmark to the template (48-px units):", [round(v, 2) for v in spread.tolist()])
    size = box[2:] - box[:2]
    print(f"# median box: centre ({(box[0] + box[2]) / 2:.2f}, {(box[1] + box[3]) / 2:.2f}), size {size[0]:.2f} x {size[1]:.2f}")


if __name__ == "__main__":
    main()
