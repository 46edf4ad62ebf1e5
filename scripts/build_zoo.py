"""Export finished training runs into the bundled zoo and the manifest.

    python scripts/build_zoo.py --data ../shared/datasets/fer2013 --work-dir runs 

For every ``runs/<name>/final.safetensors``: fit the temperature on PublicTest, measure accuracy at
8-48 px, write ``lrfer/weights/<name>.safetensors`` (fp16) and its entry in ``weights_manifest.json``
(top level), then copy the manifest into the package (scripts/sync_manifest.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import torch

from lrfer.train.datasets import load_faces
from lrfer.train.evaluate import evaluate
from lrfer.train.export import export
from lrfer.train.recipes import ZOO_RECIPES, _load_weights_file
from lrfer.zoo import sha256_file

ROOT = Path(__file__).resolve().parents[1]
RESOLUTIONS = (8, 12, 16, 24, 48)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--default-resolution", type=int, default=16,
                        help="the default model is the most accurate variant at this resolution")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    val = load_faces(args.data / "fer2013-publictest.npz")
    manifest_path = ROOT / "weights_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name, recipe in ZOO_RECIPES.items():
        final = args.work_dir / name / "final.safetensors"
        if not final.exists() or (args.only and name not in args.only):
            continue
        ran = json.loads((final.parent / "checkpoint.json").read_text())["recipe"]
        if not recipe.is_run_of(ran):
            sys.exit(f"{name}: the run's recipe differs from ZOO_RECIPES; retrain or fix the recipe\n{ran}\n{recipe.to_json()}")
        model = _load_weights_file(final, torch.device("cpu")).eval()
        out = ROOT / "lrfer" / "weights" / f"{name}.safetensors"
        command = f"python scripts/train_zoo.py --data ../shared/datasets/fer2013 --only {name}"
        entry, sha = export(model, recipe, name, "fer2013", val, out, command)
        scores = evaluate(model, recipe.resolution, val, RESOLUTIONS, entry["temperature"])
        entry["metrics"]["publictest_accuracy_by_px"] = {str(s.resolution): round(s.accuracy, 4) for s in scores}
        entry.update(file=out.name, sha256=sha, source={"kind": "bundled"})
        assert sha256_file(out) == sha
        manifest["models"][name] = entry
        logging.info("%s: %s", name, entry["metrics"])
    native = {n: e for n, e in manifest["models"].items() if e["resolution"] == args.default_resolution}
    if native:
        manifest["default"] = max(native, key=lambda n: native[n]["metrics"].get("publictest_accuracy", 0.0))
    manifest["models"] = dict(sorted(manifest["models"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_manifest.py")], check=True)


if __name__ == "__main__":
    main()
