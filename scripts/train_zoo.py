"""Train every variant of the bundled zoo in order (teachers first), resumable.

    python scripts/train_zoo.py --data ../shared/datasets/fer2013 --work-dir runs [--only NAME ...]

Each run writes ``runs/<name>/checkpoint.json`` (and the tensors file it names) after every epoch and
``runs/<name>/final.safetensors`` at the end; ``scripts/build_zoo.py`` evaluates and exports them.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from lrfer.train.datasets import load_faces
from lrfer.train.recipes import ZOO_RECIPES, Trainer, save_trained, zoo_recipe


def trained_here(teacher: str | None, work_dir: Path, student: str) -> str | None:
    """A teacher's fp32 weights when this work dir trained it, else its zoo name (the bundled weights
    of the same run, stored fp16)."""
    if teacher is None or teacher not in ZOO_RECIPES:
        return teacher
    final = work_dir / teacher / "final.safetensors"
    if final.exists():
        return str(final)
    logging.info("%s: teacher %s from the zoo; train it first for the fp32 original", student, teacher)
    return teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with fer2013-train.npz and fer2013-publictest.npz")
    parser.add_argument("--work-dir", type=Path, default=Path("runs"))
    parser.add_argument("--only", nargs="*", default=None, help="variant names to train (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    for name in args.only or []:
        try:
            zoo_recipe(name)
        except ValueError as err:
            parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_faces(args.data / "fer2013-train.npz")
    val = load_faces(args.data / "fer2013-publictest.npz")
    for name, recipe in ZOO_RECIPES.items():
        if args.only and name not in args.only:
            continue
        final = args.work_dir / name / "final.safetensors"
        if final.exists():
            logging.info("%s already trained", name)
            continue
        recipe = replace(recipe, teacher=trained_here(recipe.teacher, args.work_dir, name),
                         kd_teacher=trained_here(recipe.kd_teacher, args.work_dir, name))
        model = Trainer(recipe, train, val, args.work_dir / name, args.device).fit(progress=False)
        save_trained(model, final, recipe)
        logging.info("%s done -> %s", name, final)


if __name__ == "__main__":
    main()
