"""GME-Net's attention similarity (ASKD) on gmenet-tiny's recipe, against the bundled attention transfer.

    python scripts/askd_experiment.py --data ../shared/datasets/fer2013 --work-dir runs/askd

1. A 48 px GME-Net of gmenet-tiny's layout (width 12, stride-2 stem) trained on the 48 px faces alone:
   the teacher, with the student's attention modules.
2. gmenet-tiny's zoo recipe with ``attention_distillation="askd"`` against that teacher (the same
   epochs, seed and soft targets from gmenet-fer2013-16px as the bundled weights).
3. The student rounded to fp16 and calibrated on PublicTest, as ``scripts/build_zoo.py`` exports: its
   accuracy, macro-F1 and calibration error are printed as JSON, to compare with the manifest's
   ``gmenet-tiny-fer2013-16px``. Work dirs are resumable checkpoints.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from lrfer.train.datasets import load_faces
from lrfer.train.export import calibrate_and_score, round_to_fp16_
from lrfer.train.recipes import ZOO_RECIPES, Recipe, Trainer, save_trained

STUDENT = "gmenet-tiny-fer2013-16px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with fer2013-train.npz and fer2013-publictest.npz")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/askd"))
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student-epochs", type=int, default=None, help="default: the zoo recipe's (120)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train = load_faces(args.data / "fer2013-train.npz")
    val = load_faces(args.data / "fer2013-publictest.npz")
    student = ZOO_RECIPES[STUDENT]
    layout = {**student.config, "input_size": 48}
    teacher_recipe = Recipe("gmenet", layout, 48, "supervised", epochs=args.teacher_epochs, lr=0.05)
    teacher_path = args.work_dir / "teacher48.safetensors"
    if not teacher_path.exists():
        teacher = Trainer(teacher_recipe, train, val, args.work_dir / "teacher48", args.device).fit(progress=False)
        save_trained(teacher.cpu(), teacher_path, teacher_recipe)
    recipe = replace(student, teacher=str(teacher_path), attention_distillation="askd",
                     epochs=args.student_epochs or student.epochs)
    model = Trainer(recipe, train, val, args.work_dir / "student", args.device).fit(progress=False).cpu()
    round_to_fp16_(model)
    temperature, scores = calibrate_and_score(model, recipe, val)
    print(json.dumps({"accuracy": round(scores.accuracy, 4), "macro_f1": round(scores.macro_f1, 4),
                      "ece": round(scores.ece, 4), "temperature": round(temperature, 4)}))


if __name__ == "__main__":
    main()
