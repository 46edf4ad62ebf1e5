"""lrfer quick start: read the expressions in a group photo, at full size and as a small crowd.

    python examples/quickstart.py [PHOTO] [--model NAME]

Writes ``quickstart_annotated.jpg`` next to this script.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2

import lrfer
from lrfer.annotate import save_annotated

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", nargs="?", type=Path, default=HERE / "group1.jpg")
    parser.add_argument("--model", default=None, help="zoo name (default: the manifest's default)")
    args = parser.parse_args()

    rec = lrfer.load(args.model)  # the auto detector (BlazeFace + MTCNN), CUDA if available
    print(rec)
    image = lrfer.load_image(args.photo)

    faces = rec.predict(image)
    print(f"{args.photo.name}: {len(faces)} face(s)")
    for face in faces:
        print(f"  {face.face_px:5.0f} px  {face.label:<9} {face.score:.0%}")

    # The same photo shrunk to 480 px wide: faces of 30-60 px, what a crowd camera sees.
    h, w = image.shape[:2]
    small = cv2.resize(image, (480, round(h * 480 / w)), interpolation=cv2.INTER_AREA)
    for face in rec.predict(small):
        print(f"  480 px wide: {face.face_px:4.0f} px  {face.label:<9} {face.score:.0%}")

    out = save_annotated(HERE / "quickstart_annotated.jpg", image, faces)
    print(f"annotated copy: {out}")


if __name__ == "__main__":
    main()
