"""``lrfer train`` and ``lrfer eval`` (registered into the main CLI by :func:`register`).

Only argparse is imported here; torch and the recipes load when a command runs, so ``lrfer --help``
stays fast.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrfer.constants import ATTENTION_DISTILLATIONS, RAF_SPLITS

if TYPE_CHECKING:
    from lrfer.train.datasets import FaceSet
    from lrfer.train.recipes import Recipe

log = logging.getLogger(__name__)
DEFAULT_RESOLUTIONS = "8,12,16,24,48"
#: ``--epochs``' defaults as ``lrfer train --help`` gives them, written out so that the help imports no
#: recipes (tests/test_train_cli.py checks them against ``ARCH_DEFAULTS``' recipes).
EPOCHS_HELP = "--arch gmenet or baseline 60, resnet18 16, fsrfer or manet 5; --recipe NAME: that variant's"
DEVICE_HELP = "auto | cpu | cuda | cuda:N (default: auto, CUDA where there is one)"
#: The dataset part of a model name (see lrfer.zoo's name grammar).
DATASET_NAME_RE = re.compile(r"[a-z0-9_]+")
#: A file or folder name ending in a split word (``raf-train``, ``faces_publictest``): the dataset's name, the
#: separator and the split. The split is not part of the dataset part of a model's name.
SPLIT_SUFFIX_RE = re.compile(r"(?P<name>.*?[a-z0-9+].*?)(?P<sep>[-_. ]+)"
                             r"(?P<split>train|val|valid|validation|test|publictest|privatetest)", re.IGNORECASE)


def register(sub: Any) -> None:
    """Add the ``train`` and ``eval`` sub-commands to an argparse sub-parser collection."""
    _add_train(sub)
    _add_eval(sub)


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a zoo architecture on FER2013, RAF-DB or a folder of class folders",
                       description="Train a model and write fp16 safetensors with its manifest entry in the metadata. "
                                   "Example (RAF-DB): lrfer train --arch gmenet --data /path/to/RAF-DB/basic "
                                   "--resolution 16 --out gmenet-raf-16px.safetensors; a zoo variant's recipe: "
                                   "lrfer train --recipe gmenet-small-fer2013-16px --data /path/to/RAF-DB/basic "
                                   "--out gmenet-small-raf-16px.safetensors")
    p.add_argument("--arch", default=None, help="resnet18 | gmenet | baseline | fsrfer | manet (or give --recipe)")
    p.add_argument("--data", required=True, type=Path,
                   help="FER2013 .npz, RAF-DB 'basic' folder, or a folder of class folders")
    p.add_argument("--resolution", type=int, default=None,
                   help="native input size in px (48 for resnet18/manet; or give --recipe)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.add_argument("--val", type=Path, default=None,
                   help="validation data (default: RAF-DB's test split, <name>-publictest.npz next to a "
                        "<name>-train.npz, as FER2013's; the split words in any case)")
    p.add_argument("--recipe", default=None,
                   help="train a zoo variant's recipe instead of --arch/--resolution, e.g. gmenet-small-fer2013-16px; "
                        "the model is named after it with the dataset part replaced")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", type=_config_item,
                   help="an architecture option over the recipe's, repeatable: e.g. --arch gmenet --resolution 48 "
                        "--config width=12 --config stem_stride=2 (a 48 px teacher of gmenet-tiny's layout for "
                        "--attention-distillation askd); `lrfer info NAME --config` shows a model's")
    p.add_argument("--teacher", default=None, help="teacher name or .safetensors (distillation, FSR-FER, MA-Net init)")
    p.add_argument("--kd-teacher", default=None,
                   help="model whose outputs on the same low-resolution faces are the soft targets (name or "
                        ".safetensors; 'none': the --teacher's on the 48 px face). The gmenet-fast, gmenet-tiny "
                        "and gmenet-nano recipes use gmenet-fer2013-16px")
    p.add_argument("--attention-distillation", choices=ATTENTION_DISTILLATIONS, default=None,
                   help="GME-Net's attention distillation: 'askd' (the paper's attention similarity: every attention "
                        "module against a 48 px GME-Net --teacher of the same widths) or 'activation' (attention "
                        "transfer of stage outputs from the ResNet-18 teacher; the bundled weights' and the default)")
    p.add_argument("--dataset-name", default=None, help="dataset part of the variant name (default: from --data)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help=f"passes over the training data (default: the recipe's; {EPOCHS_HELP})")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="faces per training step (default: the recipe's, 128 in every zoo recipe)")
    p.add_argument("--seed", type=int, default=None, metavar="N", help="random seed of the run (default: the recipe's, 0)")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (resumable; default: --out with the suffix .run, e.g. models/x.run/ for models/x.safetensors)")
    p.add_argument("--license", dest="weights_license", default=None, type=_licence_text,
                   help="licence of the weights, written to the entry (default: 'research use only (trained on "
                        "<dataset>)'); a teacher trained on other data is appended")
    p.add_argument("--data-license", default=None, type=_licence_text,
                   help="licence of the training data (default: FER2013's, or '<dataset>: see the dataset's own licence')")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_train)


def _config_item(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (``width=12``, ``attention=false``); a value that is not JSON is a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. width=12")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value.strip()


def _licence_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a licence cannot be empty")
    return text.strip()


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="accuracy, macro-F1, recall and calibration per resolution",
                       description="Evaluate models on a labelled dataset at several face resolutions.")
    from lrfer.cli import add_cache_dir_option

    p.add_argument("--model", action="append", required=True,
                   help="zoo name, weights path or hf://org/repo@commit (repeatable)")
    add_cache_dir_option(p)
    p.add_argument("--data", required=True, type=Path, help="FER2013 .npz, RAF-DB folder or class folders")
    p.add_argument("--split", default=None, choices=RAF_SPLITS,
                   help="RAF-DB split (default: test); a .npz or class folders are scored whole")
    p.add_argument("--resolutions", default=DEFAULT_RESOLUTIONS, help=f"comma list (default: {DEFAULT_RESOLUTIONS})")
    p.add_argument("--calibrate-on", type=Path, default=None,
                   help="fit the temperature on this data instead of using the manifest's")
    p.add_argument("--calibrate-split", default=None, choices=RAF_SPLITS,
                   help="RAF-DB split of --calibrate-on (default: train, so that calibration and scores "
                        "use different faces)")
    p.add_argument("--tta", action="store_true",
                   help="average each face's logits with its mirror image's, as lrfer.load(..., tta=True) and "
                        "lrfer predict --tta do (the temperature of --calibrate-on is then fitted on those logits)")
    p.add_argument("--details", action="store_true", help="also print macro-F1, ECE and per-class recall tables")
    p.add_argument("--plot", type=Path, default=None, help="write accuracy-vs-resolution PNG here")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_eval)


def _device(name: str) -> str:
    """``--device``, checked as ``lrfer predict`` checks it: "auto" picks CUDA when there is one, and
    "cuda" on a machine without CUDA is a ValueError rather than a failure inside torch."""
    from lrfer.cli import options_in_errors
    from lrfer.recognizer import resolve_device

    with options_in_errors({"--device": name}, "--device"):  # "--device cuda: ...", not "device='cpu'"
        return str(resolve_device(name))


def _dataset_name(data: Path) -> str:
    """The dataset part of the model name, from the data's file or folder name (letters and digits only),
    without a trailing split word: ``raf-train.npz`` and ``fer2013-train.npz`` give ``raf`` and ``fer2013``."""
    from lrfer.train.datasets import is_rafdb, own_name

    if is_rafdb(data):
        return "raf"
    name = own_name(data)  # `--data .` or `--data ..`: the folder's own name
    # a file's suffix goes, a folder's dot stays part of its name (`faces.2024/` was named `faces`)
    stem = (Path(name).stem if data.is_file() or Path(name).suffix.lower() == ".npz" else name).lower()
    split = SPLIT_SUFFIX_RE.fullmatch(stem)
    stem = (split.group("name") if split else stem).replace("+", "plus")  # ck+ -> ckplus
    name = re.sub(r"[^a-z0-9]", "", stem.split("-")[0] if stem.startswith("fer2013") else stem)
    if not DATASET_NAME_RE.fullmatch(name):
        raise ValueError(f"cannot make a dataset name from {data.name!r}; give one with --dataset-name "
                         "(lowercase letters, digits and '_')")
    return name


def _checked_dataset_name(name: str) -> str:
    if not DATASET_NAME_RE.fullmatch(name):
        raise ValueError(f"--dataset-name {name!r}: use lowercase letters, digits and '_' only (it is the middle "
                         "part of the model name <arch>-<dataset>-<res>px)")
    return name


def _variant_name(recipe_name: str | None, arch: str, dataset: str, resolution: int) -> str:
    """``<arch>-<dataset>-<res>px``; with a zoo recipe, its name with the dataset part replaced."""
    from lrfer.zoo import parse_name

    if recipe_name is not None:
        arch = parse_name(recipe_name).arch  # keeps a variant part: gmenet-small
    name = f"{arch}-{dataset}-{resolution}px"
    parse_name(name)  # raises a ValueError naming the grammar
    return name


def _check_out(out: Path) -> None:
    """Refused before training, with the name to use, as ``save_weights`` would refuse it after."""
    from lrfer.zoo import WEIGHTS_SUFFIX

    if out.suffix.lower() != WEIGHTS_SUFFIX:
        raise ValueError(f"--out {out}: the weights are written as safetensors, so the name must end in "
                         f"'{WEIGHTS_SUFFIX}' (e.g. {out.with_suffix(WEIGHTS_SUFFIX).name})")
    if out.is_dir():  # found only at export, after the whole run, as a bare IsADirectoryError on a temporary file
        raise ValueError(f"--out {out} is a folder; name the .safetensors file to write, e.g. "
                         f"{out / ('model' + WEIGHTS_SUFFIX)}")


def _check_work_dir(work_dir: Path, out: Path) -> None:
    """Refused before the data is read: a file there failed as a bare "[Errno 17] File exists", and
    ``--out`` itself as the work dir trained the whole run to fail at export."""
    if work_dir.exists() and not work_dir.is_dir():
        raise ValueError(f"work dir {work_dir} is a file, not a folder; the checkpoints need a folder of their own "
                         "(give one with --work-dir)")
    if _same_file(work_dir, out):
        raise ValueError(f"--work-dir {work_dir} is --out itself; give the checkpoints another folder, e.g. "
                         f"{default_work_dir(out)}")


def _train_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe of ``lrfer train`` from --recipe or --arch/--resolution, with the command's overrides."""
    from dataclasses import replace

    from lrfer.train.recipes import check_recipe, recipe_for, zoo_recipe

    if args.recipe:
        recipe = zoo_recipe(args.recipe)
        for flag, given, own in (("--arch", args.arch, recipe.arch), ("--resolution", args.resolution, recipe.resolution)):
            if given is not None and given != own:
                raise ValueError(f"{flag} {given} differs from recipe {args.recipe!r}, which trains {own}; "
                                 f"leave out {flag} or pick another recipe")
    elif args.arch is None or args.resolution is None:
        raise ValueError("lrfer train needs --arch and --resolution, or --recipe (a zoo variant's name)")
    else:
        recipe = recipe_for(args.arch, args.resolution)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("seed", args.seed),
                                   ("teacher", args.teacher), ("attention_distillation", args.attention_distillation))
                 if v is not None}
    if args.kd_teacher is not None:
        overrides["kd_teacher"] = None if args.kd_teacher.strip().lower() == "none" else args.kd_teacher
    elif args.teacher is not None and recipe.kd_teacher:
        log.warning("recipe %s takes its soft targets from %s, not from --teacher %s; pass --kd-teacher none to take "
                    "them from --teacher, or --kd-teacher another model", args.recipe, recipe.kd_teacher, args.teacher)
    if args.config:  # checked by check_recipe below, with the rest
        overrides["config"] = {**recipe.config, **dict(args.config)}
    recipe = replace(recipe, **overrides)
    check_recipe(recipe)
    return recipe


def _parse_resolutions(text: str) -> list[int]:
    from lrfer.constants import HR_SIZE

    values = []
    for part in text.split(","):
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"--resolutions {text!r}: {part!r} is not a whole number of pixels") from None
        if not 1 <= value <= HR_SIZE:
            raise ValueError(f"--resolutions {text!r}: {value} px is not a face size 1..{HR_SIZE} "
                             f"(faces are evaluated from {HR_SIZE}x{HR_SIZE} crops)")
        values.append(value)
    return list(dict.fromkeys(values))


def _row_labels(models: list[tuple[str, str]]) -> list[str]:
    """One table row label per (model name, --model argument): the name, plus the argument where names repeat."""
    names = Counter(name for name, _ in models)
    labels = [name if names[name] == 1 else f"{name} ({spec})" for name, spec in models]
    return [label if labels.count(label) == 1 else f"{label} #{labels[:i + 1].count(label)}"
            for i, label in enumerate(labels)]


def _default_val(data: Path) -> Path | None:
    """The validation data ``lrfer train`` takes without ``--val``: RAF-DB's test split, or the file of
    :func:`expected_val` beside a ``<name>-train.npz`` with its split word in any case (the folder's
    listing says which exists: ``FER2013-PublicTest.npz`` beside ``FER2013-Train.npz`` was not found,
    only ``FER2013-publictest.npz`` was looked for); None if there is none."""
    from lrfer.train.datasets import is_rafdb

    if is_rafdb(data):
        return data
    expected = expected_val(data)
    if expected is None:
        return None
    prefix, suffix = expected.name[: -len(VAL_SPLIT) - len(data.suffix)], data.suffix
    lower = prefix + VAL_SPLIT + suffix
    try:
        names = os.listdir(data.parent)
    except OSError:  # a folder that cannot be listed: the names tried one by one
        names = [expected.name, lower]
    # Any case of the split word (FER2013-PublicTest.npz beside FER2013-Train.npz): first the case of
    # --data's split word, then lower case, then the others in name order.
    matches = sorted((name for name in names if len(name) == len(expected.name) and name.startswith(prefix)
                      and name.endswith(suffix) and name[len(prefix):-len(suffix)].lower() == VAL_SPLIT),
                     key=lambda name: (name != expected.name, name != lower, name))
    return next((path for path in map(data.with_name, matches) if path.is_file()), None)


#: The split word of the validation file looked for beside a ``<name>-train.npz``: FER2013's PublicTest.
VAL_SPLIT = "publictest"


def expected_val(data: Path) -> Path | None:
    """The validation file :func:`_default_val` looks for beside an ``.npz`` of training faces whose name
    ends in the split word ``train``: the same name with ``publictest`` for it, written in the case of
    ``train`` there (any case is found); None for other data.

    >>> expected_val(Path("FER2013-Train.npz")).name, expected_val(Path("fer2013_TRAIN.npz")).name, expected_val(Path("x.npz"))
    ('FER2013-PublicTest.npz', 'fer2013_PUBLICTEST.npz', None)
    """
    if data.suffix != ".npz":  # a folder of class folders, `--data .` among them (a name with_name cannot take)
        return None
    split = SPLIT_SUFFIX_RE.fullmatch(data.stem)
    if split is None or split.group("split").lower() != "train":
        return None
    word = split.group("split")
    val = VAL_SPLIT.upper() if word.isupper() else "PublicTest" if word[0].isupper() else VAL_SPLIT
    return data.with_name(split.group("name") + split.group("sep") + val + data.suffix)


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def default_work_dir(out: Path) -> Path:
    """Where ``lrfer train`` keeps its checkpoints without ``--work-dir``: ``--out`` with the suffix
    ``.run``, beside it (``models/x.run`` for ``models/x.safetensors``)."""
    return out.with_suffix(".run")


def _check_teachers(recipe: Recipe, args: argparse.Namespace) -> None:
    """:func:`~lrfer.train.recipes.check_teacher_file` of the recipe's teachers, an error about a teacher given
    on the command line naming its option (two options take a model): ``--kd-teacher nope: unknown model 'nope'; ...``."""
    from lrfer.train.recipes import check_teacher_file

    for option, given, teacher in (("--teacher", args.teacher, recipe.teacher),
                                   ("--kd-teacher", args.kd_teacher, recipe.kd_teacher)):
        if not teacher:
            continue
        try:
            check_teacher_file(str(teacher))
        except (ValueError, OSError) as err:
            if given is None or len(err.args) != 1:  # the recipe's own teacher: no option to name
                raise
            err.args = (f"{option} {given}: {err.args[0]}",)
            raise


def _load_val(path: Path, given: bool) -> FaceSet:
    """The validation faces; data found by default that cannot serve is refused naming ``--val``
    (a RAF-DB label list without test lines was told only "no 'test' entries in EmoLabel/...")."""
    from lrfer.train.datasets import load_faces

    try:
        return load_faces(path, "test")
    except ValueError as err:
        if given:
            raise
        raise ValueError(f"the default validation data, {path} ('test' split): {err}; choose other data with "
                         "--val") from None


def cmd_train(args: argparse.Namespace) -> int:
    from lrfer.constants import CLASSES
    from lrfer.train.datasets import check_faces_path, is_rafdb, load_faces
    from lrfer.train.export import export
    from lrfer.train.recipes import Trainer
    from lrfer.zoo import load_manifest

    _check_out(args.out)
    work_dir = args.work_dir or default_work_dir(args.out)
    _check_work_dir(work_dir, args.out)
    device = _device(args.device)
    recipe = _train_recipe(args)
    _check_teachers(recipe, args)
    dataset = _checked_dataset_name(args.dataset_name) if args.dataset_name else _dataset_name(args.data)
    name = _variant_name(args.recipe, recipe.arch, dataset, recipe.resolution)
    if args.val is not None:  # said before the training data is read, not after
        check_faces_path(args.val, "--val")
    train = load_faces(args.data, "train")
    val_path: Path | None = args.val or _default_val(args.data)
    val = _load_val(val_path, given=args.val is not None) if val_path else None
    if val_path is None:
        expected = expected_val(args.data)
        beside = "" if expected is None else f", or put {expected.name} beside {args.data.name}"
        log.warning("no validation data (pass --val%s): %s will be exported uncalibrated (temperature 1.0) and "
                    "without metrics", beside, name)
    elif _same_file(val_path, args.data) and is_rafdb(args.data):
        log.warning("validating on %s's test split (RAF-DB has no validation split): the temperature is fitted "
                    "and the metrics measured on the faces `lrfer eval` will score; pass --val for held-out ones",
                    args.data)
    elif _same_file(val_path, args.data):
        log.warning("validating on the training data itself (--val is --data): the temperature and the metrics "
                    "are in-sample; pass held-out faces with --val")
    missing = [CLASSES[k] for k in range(len(CLASSES)) if not (train.labels == k).any()]
    if missing:
        log.warning("no training faces of %s: the model keeps all %d classes (%s) and will still give them "
                    "probability", ", ".join(missing), len(CLASSES), ", ".join(CLASSES))
    if load_manifest().models.get(name) is not None:
        log.warning("%s is also the name of a zoo model: lrfer.load(%r) loads the zoo's; load yours by its path, "
                    "or give it a name of its own with --dataset-name", name, name)
    log.info("training %s on %s (%d faces), validating on %s", name, args.data, len(train), val_path)
    model = Trainer(recipe, train, val, work_dir, device).fit()
    command = "lrfer " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "train" in sys.argv[1:] else "lrfer train"
    entry, sha = export(model.cpu(), recipe, name, dataset, val, args.out, command, split="val",
                        weights_license=args.weights_license, data_license=args.data_license)
    print(f"wrote {args.out} ({name}, sha256 {sha})")
    if entry["metrics"]:
        print("validation:", ", ".join(f"{k}={v}" for k, v in entry["metrics"].items()))
    return 0


def _load_eval_models(specs: list[str], device: str, cache_dir: Path | None = None) -> list[Any]:
    """The ``--model`` networks, each refused before any is evaluated if its classes are not the data's."""
    from lrfer.train.evaluate import check_classes
    from lrfer.zoo import load_model

    models = []
    for spec in specs:
        model = load_model(spec, device=device, cache_dir=cache_dir)
        check_classes(model)
        models.append(model)
    return models


def _warn_unused_splits(args: argparse.Namespace) -> None:
    """A warning for ``--split`` or ``--calibrate-split`` given where they choose nothing: only a RAF-DB
    folder has splits (``--split train`` on ``fer2013-publictest.npz`` scored the whole file without a word)."""
    from lrfer.train.datasets import is_rafdb

    for option, split, data, data_option in (("--split", args.split, args.data, "--data"),
                                             ("--calibrate-split", args.calibrate_split, args.calibrate_on,
                                              "--calibrate-on")):
        if split is None:
            continue
        if data is None:
            log.warning("%s %s does nothing without %s", option, split, data_option)
        elif not is_rafdb(data):
            log.warning("%s %s chooses a RAF-DB split; %s %s is not a RAF-DB folder, so all its faces are read",
                        option, split, data_option, data)


def cmd_eval(args: argparse.Namespace) -> int:
    from lrfer.train.datasets import check_faces_path, is_rafdb, load_faces, own_name
    from lrfer.train.evaluate import detail_table, evaluate, fit_temperature, markdown_table, plot_accuracy, plot_path
    from lrfer.train.recipes import predict_logits

    device = _device(args.device)
    resolutions = _parse_resolutions(args.resolutions)
    if args.plot:  # checked before the evaluation, not after it
        args.plot = plot_path(args.plot)
        args.plot.parent.mkdir(parents=True, exist_ok=True)
    check_faces_path(args.data)  # the paths, then the models (a misspelt name), before any data is read
    if args.calibrate_on is not None:
        check_faces_path(args.calibrate_on, "--calibrate-on")
    models = _load_eval_models(args.model, device, args.cache_dir)
    _warn_unused_splits(args)
    split, calibrate_split = args.split or "test", args.calibrate_split or "train"
    faces = load_faces(args.data, split)
    calibration = load_faces(args.calibrate_on, calibrate_split) if args.calibrate_on else None
    if (args.calibrate_on and _same_file(args.calibrate_on, args.data)
            and (calibrate_split == split or not is_rafdb(args.data))):
        log.warning("calibrating on the faces it evaluates (--calibrate-on is --data, split %r): the temperature "
                    "and the calibration error are in-sample", split)
    evaluated = []
    for spec, model in zip(args.model, models):
        cfg = model.pretrained_cfg
        temperature = cfg.temperature
        if calibration is not None:
            temperature = fit_temperature(predict_logits(model, calibration.images, cfg.resolution, device, tta=args.tta),
                                          calibration.labels)
        evaluated.append((cfg.name, spec, evaluate(model, cfg.resolution, faces, resolutions, temperature, device, tta=args.tta)))
    labels = _row_labels([(name, spec) for name, spec, _ in evaluated])
    results = {label: rows for label, (_, _, rows) in zip(labels, evaluated)}
    scored = own_name(args.data) + (f" (RAF-DB's {split} split)" if is_rafdb(args.data) else "")
    print(f"Accuracy (%) on {scored}, {len(faces)} faces{', each with its mirror image (--tta)' if args.tta else ''}\n")
    print(markdown_table(results))
    if args.details:
        for name, rows in results.items():
            print(f"\n{name}\n")
            print(detail_table(rows))
    if args.plot:
        plot_accuracy(results, args.plot, faces.name)
        print(f"\nwrote {args.plot}")
    return 0
