#!/usr/bin/env python
"""Measure every manifest model's PublicTest accuracy at 8-48 px and write it into the top-level
manifest's ``publictest_accuracy_by_px`` (what ``scripts/build_zoo.py`` writes at export), then copy
the manifest into the package. For a change of the evaluation operator, without retraining::

    python scripts/measure_accuracy_by_px.py --data ../shared/datasets/fer2013

The weights, their sha256 and the other metrics are untouched.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrfer.train.datasets import load_faces  # noqa: E402
from lrfer.train.evaluate import evaluate  # noqa: E402
from lrfer.zoo import load_model  # noqa: E402

RESOLUTIONS = (8, 12, 16, 24, 48)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with fer2013-publictest.npz")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    faces = load_faces(args.data / "fer2013-publictest.npz")
    manifest_path = ROOT / "weights_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name, entry in manifest["models"].items():
        model = load_model(name)
        scores = evaluate(model, entry["resolution"], faces, RESOLUTIONS, entry["temperature"])
        entry["metrics"]["publictest_accuracy_by_px"] = {str(s.resolution): round(s.accuracy, 4) for s in scores}
        logging.info("%s: %s", name, entry["metrics"]["publictest_accuracy_by_px"])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_manifest.py")], check=True)


if __name__ == "__main__":
    main()
