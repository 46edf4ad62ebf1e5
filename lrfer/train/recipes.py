"""Training recipes: one :class:`Recipe` per zoo variant, one loop with three step kinds.

* ``supervised``: cross-entropy on (degraded) faces: the HR teacher, MA-Net and the LR baseline.
* ``distill``: GME-Net: the HR teacher sees the augmented 48 px face, the student the same face
  degraded to its native resolution; cross-entropy + attention-similarity + soft-target distillation.
* ``fsr``: FSR-FER: the teacher is the fixed extractor and classifier; a feature generator is trained
  against a discriminator with classification-aware re-weighting.

Every run is seeded, checkpoints after each epoch (safetensors + JSON) and resumes from there; a
checkpoint records its recipe and training data, and a run with another recipe or data refuses to
resume from it.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lrfer.constants import ATTENTION_DISTILLATIONS, CLASSES, GRAY_MEAN, GRAY_STD, HR_SIZE
from lrfer.faces.degrade import DegradationConfig, random_degrade, to_native
from lrfer.models import build_model
from lrfer.train import losses
from lrfer.train.augment import random_affine, random_erase
from lrfer.train.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint, write_tensors
from lrfer.train.datasets import FaceSet

if TYPE_CHECKING:
    from lrfer.models.fsrfer import FSRFER
    from lrfer.models.gmenet import GMENet
    from lrfer.models.manet import MANet

log = logging.getLogger(__name__)
TEACHER_NAME = "resnet18-fer2013-48px"
#: The most accurate 16 px variant: soft targets for the speed variants (``Recipe.kd_teacher``).
DEFAULT_16PX = "gmenet-fer2013-16px"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained variant (recorded in full in its training checkpoint; its
    manifest entry keeps only ``arch``, ``config``, ``resolution``, ``seed`` and the command that ran it)."""

    arch: str
    config: dict[str, Any]
    resolution: int
    method: str = "supervised"            # supervised | distill | fsr
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    teacher: str | None = None            # zoo name or .safetensors path (distill, fsr, init_from_teacher)
    # Soft targets from this network on the same low-resolution face (distill) instead of the HR
    # teacher's on the 48 px face: a target the small student can reach from what it sees.
    kd_teacher: str | None = None
    init_from_teacher: bool = False       # copy matching teacher weights before training (MA-Net)
    # MA-Net as its authors train it: each branch on its own cross-entropy, weighted like the served
    # blend (0.6 local + 0.4 global), instead of one cross-entropy of the blended logits.
    branch_losses: bool = False
    att_weight: float = 5.0               # attention distillation
    # Which attention the student learns from the 48 px teacher: "activation", the energy of each
    # stage's output (attention transfer; the bundled weights, whose ResNet-18 teacher has no attention
    # modules), or "askd", GME-Net's attention similarity: the pre-sigmoid maps of every attention module,
    # from a 48 px teacher with the same modules (a GME-Net trained at 48 px).
    attention_distillation: str = "activation"
    kd_weight: float = 1.0                # soft-target distillation
    kd_temperature: float = 4.0
    fsr_beta: float = 2.0                 # classification-aware re-weighting strength
    adv_weight: float = 0.01
    cls_weight: float = 1.0
    erase_prob: float = 0.25
    degradation: dict[str, Any] = field(default_factory=dict)  # DegradationConfig fields beyond resolution

    @property
    def uses_teacher(self) -> bool:
        """Whether training reads the teacher: distillation, FSR-FER, or initialisation from it."""
        return self.method in ("distill", "fsr") or self.init_from_teacher

    def degradation_config(self) -> DegradationConfig:
        return DegradationConfig(resolution=self.resolution, **self.degradation)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def is_run_of(self, ran: dict[str, Any]) -> bool:
        """Whether ``ran``, the recipe a run recorded in its checkpoint, is this one. Fields added after
        the run count at their defaults; a teacher may be the fp32 file of the named variant trained in
        the same work dir (``<work dir>/<name>/final.safetensors``, as ``scripts/train_zoo.py`` does)."""
        return not self.differences(ran)

    def differences(self, ran: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """The fields in which ``ran`` differs from this recipe (as for :meth:`is_run_of`):
        ``{field: (recorded value, this recipe's value)}``."""
        recorded = {f.name: f.default for f in fields(self) if f.default is not MISSING} | ran
        declared = json.loads(json.dumps(self.to_json()))
        for key in ("teacher", "kd_teacher"):
            if _trained_as(declared[key], recorded.get(key)):
                declared[key] = recorded[key]
        if not self.uses_teacher:  # a teacher such a run was given (before it was refused) taught nothing
            declared["teacher"] = recorded.get("teacher")
        return {key: (recorded.get(key), declared.get(key)) for key in sorted(recorded.keys() | declared.keys())
                if recorded.get(key) != declared.get(key)}


def _trained_as(name: str | None, used: str | None) -> bool:
    """Whether a run's teacher ``used`` is the declared ``name``, or that variant's ``final.safetensors``."""
    if name is None or used is None:
        return name == used
    return used == name or (Path(used).name == "final.safetensors" and Path(used).parent.name == name)


LR_DEGRADATION = {"random_method": True, "noise_std_max": 0.02}

#: The recipes that produced the bundled zoo, by variant name.
ZOO_RECIPES: dict[str, Recipe] = {
    TEACHER_NAME: Recipe("resnet18", {"width": 16}, 48, epochs=16, lr=0.1),
    DEFAULT_16PX: Recipe("gmenet", {"width": 32, "input_size": 16}, 16, "distill", epochs=60,
                         teacher=TEACHER_NAME, degradation=LR_DEGRADATION),
    "baseline-fer2013-16px": Recipe("baseline", {"width": 32, "input_size": 16}, 16, epochs=60, degradation=LR_DEGRADATION),
    "fsrfer-fer2013-16px": Recipe("fsrfer", {"input_size": 16, "extractor_width": 16}, 16, "fsr", epochs=5, lr=1e-3,
                                  weight_decay=0.0, teacher=TEACHER_NAME, degradation=LR_DEGRADATION),
    "gmenet-fer2013-12px": Recipe("gmenet", {"width": 32, "input_size": 12}, 12, "distill", epochs=30,
                                  teacher=TEACHER_NAME, degradation=LR_DEGRADATION),
    "gmenet-fer2013-8px": Recipe("gmenet", {"width": 32, "input_size": 8}, 8, "distill", epochs=30,
                                 teacher=TEACHER_NAME, degradation=LR_DEGRADATION),
    "manet-fer2013-48px": Recipe("manet", {"width": 16}, 48, epochs=5, lr=0.03, teacher=TEACHER_NAME, init_from_teacher=True),
    "gmenet-fer2013-24px": Recipe("gmenet", {"width": 24, "input_size": 24}, 24, "distill", epochs=24,
                                  teacher=TEACHER_NAME, degradation=LR_DEGRADATION),
    # Half the width of the default: about a quarter of its multiply-adds, for CPU throughput.
    "gmenet-small-fer2013-16px": Recipe("gmenet", {"width": 16, "input_size": 16}, 16, "distill", epochs=60,
                                        teacher=TEACHER_NAME, degradation=LR_DEGRADATION),
    # The small one with a stride-2 stem: local stages at 8, 4 and 2 px, about 1/16 of the default's
    # multiply-adds, for >= 10x the 48 px reference's CPU throughput. Soft targets from the default
    # on the same 16 px faces (tiny: 52.7 -> 54.2 % against the HR teacher's; small: 56.9 -> 56.6, not used).
    # 180 epochs instead of 120 gave the fast one 55.4 % against 55.8 % (stop 22): not used.
    "gmenet-fast-fer2013-16px": Recipe("gmenet", {"width": 16, "input_size": 16, "stem_stride": 2}, 16, "distill", epochs=120,
                                       teacher=TEACHER_NAME, degradation=LR_DEGRADATION,
                                       kd_teacher=DEFAULT_16PX),
    # The fast one at width 12: the fewest multiply-adds of the 16 px GME-Nets.
    "gmenet-tiny-fer2013-16px": Recipe("gmenet", {"width": 12, "input_size": 16, "stem_stride": 2}, 16, "distill", epochs=120,
                                       teacher=TEACHER_NAME, degradation=LR_DEGRADATION,
                                       kd_teacher=DEFAULT_16PX),
    # The tiny one at width 8: under half its multiply-adds, for >= 10x the reference on CPUs where
    # gmenet-tiny's network stays near 8x (the 2-core Intel Xeon of stops 40-43).
    "gmenet-nano-fer2013-16px": Recipe("gmenet", {"width": 8, "input_size": 16, "stem_stride": 2}, 16, "distill", epochs=120,
                                       teacher=TEACHER_NAME, degradation=LR_DEGRADATION,
                                       kd_teacher=DEFAULT_16PX),
}

#: Defaults for ``lrfer train --arch A`` on other data (e.g. RAF-DB).
ARCH_DEFAULTS: dict[str, str] = {
    "resnet18": TEACHER_NAME, "gmenet": DEFAULT_16PX, "baseline": "baseline-fer2013-16px",
    "fsrfer": "fsrfer-fer2013-16px", "manet": "manet-fer2013-48px",
}


def zoo_recipe(name: str) -> Recipe:
    """The recipe of the zoo variant ``name``; an unknown name raises a ValueError listing close ones.

    >>> zoo_recipe("gmenet-small-fer2013-16px").config["width"]
    16
    """
    key = name.strip().lower()  # as model names: ' GMENet-Tiny-FER2013-16px' was unknown, its suggestion itself
    if key in ZOO_RECIPES:
        return ZOO_RECIPES[key]
    close = difflib.get_close_matches(key, ZOO_RECIPES, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown recipe {name!r}; {hint}known recipes: {', '.join(ZOO_RECIPES)}")


def recipe_for(arch: str, resolution: int, **overrides: Any) -> Recipe:
    """The zoo recipe of ``arch`` moved to ``resolution`` (the config's input_size follows)."""
    if arch not in ARCH_DEFAULTS:
        raise ValueError(f"no recipe for architecture {arch!r}; known: {sorted(ARCH_DEFAULTS)}")
    base = ZOO_RECIPES[ARCH_DEFAULTS[arch]]
    config = dict(base.config)
    if "input_size" in config:
        config["input_size"] = resolution
    elif resolution != HR_SIZE:
        raise ValueError(f"{arch} runs at {HR_SIZE} px only")
    return replace(base, config=config, resolution=resolution, **overrides)


def check_recipe(recipe: Recipe) -> None:
    """Refuse sizes, teachers and configs no run can use, before any data is loaded (the config is tried
    on a network: :func:`check_config_builds`)."""
    for key in ("epochs", "batch_size"):
        value = getattr(recipe, key)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key.replace('_', ' ')} must be a positive whole number, got {value!r}")
    if not isinstance(recipe.seed, int) or not SEED_RANGE[0] <= recipe.seed <= SEED_RANGE[1]:
        raise ValueError(f"seed must be a whole number {SEED_RANGE[0]}..{SEED_RANGE[1]} (what torch seeds with), "
                         f"got {recipe.seed!r}")
    if not 1 <= recipe.resolution <= HR_SIZE:
        raise ValueError(f"resolution must be 1..{HR_SIZE} px (the training faces are {HR_SIZE}x{HR_SIZE}), "
                         f"got {recipe.resolution}")
    native = recipe.config.get("input_size", recipe.resolution)
    if native != recipe.resolution:
        raise ValueError(f"{recipe.arch}: config input_size {native} differs from the recipe's resolution "
                         f"{recipe.resolution}")
    if recipe.attention_distillation not in ATTENTION_DISTILLATIONS:
        raise ValueError(f"attention_distillation must be one of {list(ATTENTION_DISTILLATIONS)}, "
                         f"got {recipe.attention_distillation!r}")
    if recipe.attention_distillation == "askd" and (recipe.arch != "gmenet" or recipe.method != "distill"):
        raise ValueError(f"attention similarity ('askd') distils GME-Net's attention modules; this {recipe.arch} "
                         f"recipe trains by {recipe.method!r}")
    if recipe.kd_teacher and recipe.method != "distill":
        raise ValueError(f"kd_teacher {recipe.kd_teacher!r} gives soft targets to distillation; this {recipe.arch} "
                         f"recipe trains by {recipe.method!r} and would ignore it")
    if recipe.branch_losses and recipe.arch != "manet":
        raise ValueError(f"branch_losses is MA-Net's loss (a local and a global branch); {recipe.arch} has no branches")
    if recipe.teacher and not recipe.uses_teacher:
        raise ValueError(f"teacher {recipe.teacher!r} is read by distillation, FSR-FER or initialisation from it; this "
                         f"{recipe.arch} recipe trains by {recipe.method!r} and would ignore it")
    check_config_builds(recipe)


def check_teacher_file(teacher: str) -> None:
    """FileNotFoundError or ValueError naming a teacher (a name, a ``.safetensors`` path or a Hub id) whose
    weights file is missing or that lrfer cannot read as a network, or a zoo name that the manifest lacks
    (with close matches). Reads only a file's header: a run would otherwise fail after loading its data."""
    from lrfer.zoo import _hub_uri, _looks_like_path, get_spec

    if teacher.endswith(".safetensors"):
        _teacher_header(Path(teacher))
    elif _hub_uri(teacher) is None and not _looks_like_path(teacher):
        get_spec(teacher)


#: The seeds torch's generators take (a larger one failed after the data was loaded: "Overflow when unpacking long long").
SEED_RANGE = (-(2**63), 2**64 - 1)
#: Config keys that training sets itself: the classes and the gray input.
TRAINING_OWN_CONFIG_KEYS = ("num_classes", "in_chans")


def check_config_builds(recipe: Recipe) -> None:
    """ValueError naming ``recipe.config`` when its network cannot be built, or cannot read one face of
    the recipe's resolution (a width of 0 or ``"abc"``, a dropout rate of 2); torch's random stream
    is left as it was."""
    from lrfer.models import check_config

    check_config(recipe.arch, recipe.config)
    reserved = [key for key in TRAINING_OWN_CONFIG_KEYS if key in recipe.config]
    if reserved:
        raise ValueError(f"config {reserved} are set by training ({len(CLASSES)} classes, gray faces); leave them out")
    try:  # a trial: the run builds its own network, with whatever warnings that gives
        with torch.random.fork_rng(devices=[]), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(recipe.arch, num_classes=len(CLASSES), **recipe.config).eval()
            model(torch.zeros(1, 1, recipe.resolution, recipe.resolution))
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise ValueError(f"{recipe.arch} cannot be trained with config {recipe.config}: {err}") from None
    if recipe.batch_size == 1 and recipe.method != "fsr":  # FSR-FER trains its generator, not this forward
        _check_trains_on_one_face(recipe)


def _check_trains_on_one_face(recipe: Recipe) -> None:
    """ValueError when a batch of one face cannot train the recipe's network: BatchNorm over 1x1 maps in
    training mode has one value per channel (GME-Net at 8 px with a stride-2 stem, at 4 px); the run
    failed at its first step, after its data and teachers were loaded."""
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(recipe.arch, num_classes=len(CLASSES), **recipe.config).train()
            model(torch.zeros(1, 1, recipe.resolution, recipe.resolution))
    except ValueError as err:
        raise ValueError(f"batch size 1 cannot train {recipe.arch} with config {recipe.config} at {recipe.resolution} "
                         f"px ({err}: its BatchNorm needs 2 faces or more); use a batch size of 2 or more") from None


def weights_digest(model: nn.Module | None) -> str | None:
    """sha256 of a network's state dict (names and values), or None for no network."""
    if model is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _short_digest(digest: str | None) -> str:
    return "none" if digest is None else f"sha256 {digest[:12]}"


def data_fingerprint(faces: FaceSet) -> dict[str, Any]:
    """What identifies a run's training data in its checkpoint: the number of faces and a hash of them."""
    digest = hashlib.sha256(np.ascontiguousarray(faces.images).data)
    digest.update(np.ascontiguousarray(faces.labels, dtype=np.int64).data)
    return {"faces": len(faces), "sha256": digest.hexdigest()}


class RunMismatchError(ValueError):
    """A work dir's checkpoint belongs to a run with another recipe or other training data."""


def _describe_data(fingerprint: dict[str, Any]) -> str:
    return f"{fingerprint['faces']} faces (sha256 {fingerprint['sha256'][:12]})"


def _describe_mismatch(work_dir: Path, differing: dict[str, tuple[str, str]]) -> str:
    details = "; ".join(f"{key}: {old} in the checkpoint, {new} now" for key, (old, new) in differing.items())
    return (f"{work_dir} holds the checkpoint of another run ({details}); resuming would mix the two. "
            "Train in another work dir (lrfer train --work-dir DIR) or delete this one to start over")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The recipe's input normalisation (a model being trained has no spec of its own)."""
    return (x - GRAY_MEAN) / GRAY_STD


def normalizer(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``model``'s inputs are normalised: with the mean/std of its :class:`~lrfer.zoo.ModelSpec`
    (``model.pretrained_cfg``, set by :func:`lrfer.zoo.load_model`) as the recognizer does, or with the
    recipe's constants (:func:`normalize`) for a model without one (being trained)."""
    spec = getattr(model, "pretrained_cfg", None)
    if spec is None:
        return normalize

    def by_spec(x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    return by_spec


def load_trained(spec: str | Path, device: torch.device) -> nn.Module:
    """A trained network (zoo name or weights file), frozen, for use as a teacher."""
    model = _load_weights_file(Path(spec), device) if str(spec).endswith(".safetensors") else _load_zoo(spec, device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _load_zoo(spec: str | Path, device: torch.device) -> nn.Module:
    from lrfer.zoo import load_model

    return load_model(spec, device=device)


def _load_weights_file(path: Path, device: torch.device) -> nn.Module:
    """A teacher file. One that records its content sha256 (``lrfer train --out``, the zoo's files) goes
    through :func:`lrfer.zoo.load_model`, which verifies it; one written by :func:`save_trained` (a run's
    final weights: arch and config, no hash) is read here, its network's shapes checked on the meta
    device before any memory is spent on it."""
    from safetensors.torch import load as load_safetensors

    from lrfer.zoo import CONTENT_SHA_METADATA_KEY, LEGACY_DATA_SHA_METADATA_KEY, _meta_build, load_model

    spec, metadata = _teacher_header(path)
    if CONTENT_SHA_METADATA_KEY in metadata or LEGACY_DATA_SHA_METADATA_KEY in metadata:
        return load_model(path, device=device)
    state = load_safetensors(path.read_bytes())
    described = f"build_model({spec['arch']!r}, **{spec['config']})"
    network = _meta_build(spec["arch"], spec["config"], len(state), "the teacher's tensors", str(path))
    if {k: tuple(v.shape) for k, v in network.state_dict().items()} != {k: tuple(v.shape) for k, v in state.items()}:
        raise ValueError(f"{path}: its tensors do not fit {described}, which its header names")
    model = build_model(spec["arch"], **spec["config"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device)


def _teacher_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The architecture and config that :func:`save_trained` (or an export) wrote into a weights file, and
    the file's metadata; ValueError naming the file when it is not lrfer's safetensors (ChecksumError when
    not safetensors)."""
    from lrfer.zoo import SPEC_METADATA_KEY, _read_metadata

    if not path.is_file():
        raise FileNotFoundError(f"No such weights file: {path}")
    metadata = _read_metadata(path)
    if SPEC_METADATA_KEY not in metadata:
        raise ValueError(f"{path} has no {SPEC_METADATA_KEY!r} metadata, so its architecture is unknown: give a "
                         "file written by lrfer train (its --out or its work folder's final weights) or a zoo name")
    try:
        spec = json.loads(metadata[SPEC_METADATA_KEY])
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        raise ValueError(f"{path}: its {SPEC_METADATA_KEY!r} metadata is not JSON lrfer can read ({err})") from None
    if not (isinstance(spec, dict) and isinstance(spec.get("arch"), str) and isinstance(spec.get("config"), dict)):
        raise ValueError(f"{path}: its {SPEC_METADATA_KEY!r} metadata names no 'arch' (text) and 'config' "
                         "(an object)")
    return spec, metadata


def save_trained(model: nn.Module, path: Path, recipe: Recipe) -> None:
    """Full-precision weights of a finished run, self-describing (arch + config in the metadata)."""
    from lrfer.zoo import SPEC_METADATA_KEY

    spec = {"arch": recipe.arch, "config": recipe.config, "resolution": recipe.resolution}
    write_tensors(Path(path), {k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  metadata={SPEC_METADATA_KEY: json.dumps(spec)})


def copy_matching_weights(source: nn.Module, target: nn.Module) -> int:
    """Copy every same-named, same-shaped tensor; MA-Net's patch branches take the teacher's stage 3."""
    src = source.state_dict()
    aliases = {}
    for key in target.state_dict():
        if key.startswith("patches."):
            aliases[key] = "stages.2." + key.split(".stage.", 1)[1] if ".stage." in key else key
        elif key.startswith("global_branch.1."):
            aliases[key] = "stages.2." + key[len("global_branch.1."):]
        elif key.startswith("global_branch.2."):
            aliases[key] = "stages.3." + key[len("global_branch.2."):]
    state = target.state_dict()
    copied = 0
    for key, value in state.items():
        other = src.get(aliases.get(key, key))
        if other is not None and other.shape == value.shape:
            state[key] = other.clone()
            copied += 1
    target.load_state_dict(state)
    return copied


def _check_teacher(teacher: nn.Module | None, recipe: Recipe, student: nn.Module) -> None:
    """Distillation, FSR-FER and teacher initialisation read the ResNet-18 teacher's stages and head."""
    from lrfer.models.resnet import ResNet

    if not recipe.uses_teacher:
        return
    if recipe.attention_distillation == "askd":
        _check_attention_teacher(teacher, recipe, student)
        return
    purpose = "initialising from a teacher" if recipe.method == "supervised" else f"{recipe.method!r} training"
    fits = f"a ResNet-18 teacher: {TEACHER_NAME!r} or a .safetensors written by `lrfer train --arch resnet18`"
    if teacher is None:
        raise ValueError(f"{purpose} of {recipe.arch} needs {fits}")
    if not isinstance(teacher, ResNet):
        raise ValueError(f"teacher {recipe.teacher!r} is a {type(teacher).__name__}; {purpose} of {recipe.arch} "
                         f"needs {fits}")
    extractor = getattr(student, "extractor", None)
    if recipe.method == "fsr" and extractor is not None and extractor.stage_widths != teacher.stage_widths:
        raise ValueError(f"teacher {recipe.teacher!r} has width {teacher.stage_widths[0]} but the FSR-FER extractor "
                         f"width {extractor.stage_widths[0]}; set the recipe's extractor_width to the teacher's")


def native_resolution(model: nn.Module) -> int | None:
    """The face size a trained network reads: its spec's resolution, else its input size (None if unknown)."""
    spec = getattr(model, "pretrained_cfg", None)
    return getattr(spec, "resolution", None) or getattr(model, "input_size", None)


def _check_kd_teacher(kd_teacher: nn.Module | None, recipe: Recipe) -> None:
    """Soft targets come from ``kd_teacher`` on the student's own low-resolution faces: it must read that size."""
    resolution = None if kd_teacher is None else native_resolution(kd_teacher)
    if resolution is not None and resolution != recipe.resolution:
        raise ValueError(f"kd_teacher {recipe.kd_teacher!r} reads {resolution} px faces, but its soft targets are taken "
                         f"on the student's {recipe.resolution} px faces; give a {recipe.resolution} px model, or "
                         "--kd-teacher none for the --teacher's targets on the 48 px face")


def _check_attention_teacher(teacher: nn.Module | None, recipe: Recipe, student: nn.Module) -> None:
    """Attention similarity compares every attention module of the student with the teacher's
    matching one, channel by channel: the teacher needs the same modules, of the same widths."""
    from lrfer.models.gmenet import AttentionRecorder, ChannelAttention

    def channel_widths(model: nn.Module) -> list[int]:
        return [cast(nn.Conv2d, m.mlp[-1]).out_channels for m in AttentionRecorder(model).modules
                if isinstance(m, ChannelAttention)]

    widths = channel_widths(student)
    fits = (f"a 48 px GME-Net with the student's attention modules (channel widths {widths}): a .safetensors "
            "written by `lrfer train --arch gmenet --resolution 48` with the student's layout (--config width=W, "
            "--config stem_stride=S, ...)")
    if teacher is None:
        raise ValueError(f"attention similarity ('askd') needs {fits}")
    teacher_widths = channel_widths(teacher)
    if teacher_widths != widths:
        raise ValueError(f"teacher {recipe.teacher!r} has attention modules of widths {teacher_widths or 'none'}, the "
                         f"student {widths}; attention similarity ('askd') needs {fits}")
    if native_resolution(teacher) != HR_SIZE:
        raise ValueError(f"teacher {recipe.teacher!r} reads {native_resolution(teacher)} px faces; attention similarity "
                         f"('askd') needs {fits}")


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """``scheduler.state_dict()`` without functions, for the checkpoint's JSON: torch 2.1's OneCycleLR
    keeps its annealing function there (``anneal_func``; newer torches the string ``_anneal_func_type``),
    and its ``__init__`` sets it again before a resume loads the rest."""
    return {k: v for k, v in scheduler.state_dict().items() if not callable(v)}


class Trainer:
    """One training run of a :class:`Recipe` on a :class:`FaceSet`, validated after each epoch on
    ``val_set`` (``None``: no validation).

    ``work_dir`` (created) receives the per-epoch checkpoint (``checkpoint-*.safetensors`` and
    ``checkpoint.json``) that :meth:`fit` resumes from; ``device``: where the model trains.
    ValueError for a recipe :func:`check_recipe` refuses or fewer than 2 training faces.
    """

    def __init__(self, recipe: Recipe, train_set: FaceSet, val_set: FaceSet | None, work_dir: Path,
                 device: str | torch.device = "cpu") -> None:
        check_recipe(recipe)
        if len(train_set) < 2:
            raise ValueError(f"{train_set.name}: {len(train_set)} training face(s); training needs at least 2")
        self.recipe, self.train_set, self.val_set = recipe, train_set, val_set
        self.work_dir = Path(work_dir)
        self.device = torch.device(device)
        torch.manual_seed(recipe.seed)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.images = torch.from_numpy(train_set.images).unsqueeze(1)  # uint8 (N,1,48,48)
        self.labels = torch.from_numpy(train_set.labels)
        self.model = build_model(recipe.arch, num_classes=len(CLASSES), **recipe.config).to(self.device)
        self.teacher = load_trained(recipe.teacher, self.device) if recipe.teacher else None
        self.kd_teacher = load_trained(recipe.kd_teacher, self.device) if recipe.kd_teacher else None
        _check_teacher(self.teacher, recipe, self.model)
        _check_kd_teacher(self.kd_teacher, recipe)
        # Teachers are known by their weights, not by how their path was written
        self.teacher_weights = {"teacher": weights_digest(self.teacher), "kd_teacher": weights_digest(self.kd_teacher)}
        self.discriminator: nn.Module | None = None
        self.modules: dict[str, nn.Module] = {"model": self.model}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # Full batches only, but at least one: a set smaller than a batch is one batch.
        self.steps_per_epoch = max(1, len(self.labels) // recipe.batch_size)
        self.data = data_fingerprint(train_set)
        self._setup_method()
        self.history: list[dict[str, float]] = []
        self.work_dir.mkdir(parents=True, exist_ok=True)

    # -- set-up per method -------------------------------------------------------------------
    def _setup_method(self) -> None:
        r = self.recipe
        total = r.epochs * self.steps_per_epoch
        if r.init_from_teacher and self.teacher is not None:
            log.info("copied %d tensors from the teacher", copy_matching_weights(self.teacher, self.model))
        if r.method == "fsr":
            from lrfer.models.fsrfer import FeatureDiscriminator

            assert self.teacher is not None  # _check_teacher
            model = self._fsr_model
            model.extractor.load_state_dict(self.teacher.state_dict())
            model.extractor.requires_grad_(False)
            channels = model.extractor.stage_widths[model.sr_stage]
            self.discriminator = FeatureDiscriminator(channels).to(self.device)
            self.modules["discriminator"] = self.discriminator
            self.optimizers["generator"] = torch.optim.Adam(model.generator.parameters(), r.lr, betas=(0.9, 0.99))
            self.optimizers["discriminator"] = torch.optim.Adam(self.discriminator.parameters(), r.lr, betas=(0.9, 0.99))
            self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] = [
                torch.optim.lr_scheduler.CosineAnnealingLR(o, total) for o in self.optimizers.values()]
            self.step_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] = self._fsr_step
            return
        opt = torch.optim.SGD(self.model.parameters(), r.lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay)
        self.optimizers["model"] = opt
        self.schedulers = [torch.optim.lr_scheduler.OneCycleLR(opt, r.lr, total_steps=total, pct_start=0.15)]
        self.step_fn = self._distill_step if r.method == "distill" else self._supervised_step

    # -- the network as its method reads it (the recipe's architecture) ------------------------
    @property
    def _fsr_model(self) -> FSRFER:
        """The network of the ``fsr`` method, FSR-FER."""
        return cast("FSRFER", self.model)

    @property
    def _distilled_model(self) -> GMENet:
        """The network of the ``distill`` method, a GME-Net."""
        return cast("GMENet", self.model)

    @property
    def _branched_model(self) -> MANet:
        """The network trained with ``branch_losses``, MA-Net (:func:`check_recipe`)."""
        return cast("MANet", self.model)

    # -- steps ---------------------------------------------------------------------------------
    def _degrade(self, hr: torch.Tensor) -> torch.Tensor:
        if self.recipe.resolution == HR_SIZE:
            return hr
        return random_degrade(hr, self.recipe.degradation_config(), self.generator)

    def _optimize(self, loss: torch.Tensor, name: str = "model") -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def _supervised_step(self, hr: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        x = normalize(self._degrade(hr))
        if self.recipe.branch_losses:
            return self._branch_step(x, y)
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.recipe.label_smoothing)
        self._optimize(loss)
        return {"loss": loss.item()}

    def _branch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """MA-Net's loss (Zhao et al. 2021, the authors' ``beta = 0.6``): a cross-entropy per branch,
        weighted as the branches' logits are blended for serving."""
        from lrfer.models.manet import GLOBAL_WEIGHT, LOCAL_WEIGHT

        local, global_ = self._branched_model.forward_branches(x)
        smoothing = self.recipe.label_smoothing
        local_loss = F.cross_entropy(local, y, label_smoothing=smoothing)
        global_loss = F.cross_entropy(global_, y, label_smoothing=smoothing)
        loss = LOCAL_WEIGHT * local_loss + GLOBAL_WEIGHT * global_loss
        self._optimize(loss)
        return {"loss": loss.item(), "local": local_loss.item(), "global": global_loss.item()}

    def _distill_step(self, hr: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        r = self.recipe
        low_res = normalize(self._degrade(hr))
        if r.attention_distillation == "askd":
            features, att, teacher_logits = self._attention_similarity(normalize(hr), low_res)
        else:
            features, att, teacher_logits = self._attention_transfer(normalize(hr), low_res)
        if self.kd_teacher is not None:
            with torch.no_grad():
                teacher_logits = self.kd_teacher(low_res)
        model = self._distilled_model
        logits = model.fc(model.dropout(features))
        ce = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
        kd = losses.distillation_kl(logits, teacher_logits, r.kd_temperature)
        loss = ce + r.att_weight * att + r.kd_weight * kd
        self._optimize(loss)
        return {"loss": loss.item(), "ce": ce.item(), "att": att.item(), "kd": kd.item()}

    def _attention_transfer(self, hr: torch.Tensor, low_res: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student features, the attention-transfer loss against the ResNet-18 teacher's stages, and
        the teacher's logits on the 48 px face."""
        from lrfer.models.resnet import ResNet

        assert isinstance(self.teacher, ResNet)  # _check_teacher
        with torch.no_grad():
            teacher_maps = self.teacher.forward_features(hr)
            teacher_logits = self.teacher.head(teacher_maps[-1])
        features, student_maps = self._distilled_model.forward_features(low_res)
        return features, losses.attention_transfer_loss(student_maps, teacher_maps[: len(student_maps)]), teacher_logits

    def _attention_similarity(self, hr: torch.Tensor, low_res: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student features, the ASKD loss between the attention modules of the student (on the
        low-resolution face) and of the 48 px GME-Net teacher (on the 48 px face), and the teacher's logits."""
        from lrfer.models.gmenet import AttentionRecorder

        assert self.teacher is not None
        with torch.no_grad(), AttentionRecorder(self.teacher) as teacher_attention:
            teacher_logits = self.teacher(hr)
        with AttentionRecorder(self.model) as student_attention:
            features, _ = self._distilled_model.forward_features(low_res)
        return features, losses.askd_loss(student_attention.maps, teacher_attention.maps), teacher_logits

    def _fsr_step(self, hr: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        r, model, disc = self.recipe, self._fsr_model, self.discriminator
        assert disc is not None
        with torch.no_grad():
            hr_feat = model.extractor.stem_to_stage(normalize(hr), model.sr_stage)
            lr_feat = model.lr_features(normalize(self._degrade(hr)))
            weights = losses.classification_aware_weights(model.classify_features(lr_feat), y, r.fsr_beta)
        sr_feat = model.generator(lr_feat)
        feat_loss = losses.weighted_feature_loss(sr_feat, hr_feat, weights)
        cls_loss = (F.cross_entropy(model.classify_features(sr_feat), y, reduction="none") * weights).mean()
        adv_loss = losses.gan_loss(disc(sr_feat), real=True)
        g_loss = feat_loss + r.cls_weight * cls_loss + r.adv_weight * adv_loss
        self._optimize(g_loss, "generator")
        d_loss = losses.gan_loss(disc(hr_feat), real=True) + losses.gan_loss(disc(sr_feat.detach()), real=False)
        self._optimize(d_loss, "discriminator")
        return {"loss": g_loss.item(), "feat": feat_loss.item(), "cls": cls_loss.item(), "d": d_loss.item()}

    # -- loop ----------------------------------------------------------------------------------
    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hr = self.images[index].float().div_(255)
        hr = random_affine(hr, self.generator)
        if self.recipe.erase_prob:
            hr = random_erase(hr, self.generator, self.recipe.erase_prob)
        return hr.to(self.device, non_blocking=True), self.labels[index].to(self.device, non_blocking=True)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.recipe.method == "fsr":
            self._fsr_model.extractor.eval()  # fixed extractor: frozen BatchNorm statistics too

    def _checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.json"

    def _check_same_run(self, meta: dict[str, Any]) -> None:
        differences = self.recipe.differences(meta["recipe"])
        recorded = meta.get("teacher_weights")  # absent in checkpoints written before it was saved
        if recorded is not None:
            for key, digest in self.teacher_weights.items():
                differences.pop(key, None)
                if recorded.get(key) != digest:
                    differences[f"{key}'s weights"] = (_short_digest(recorded.get(key)), _short_digest(digest))
        differing = {key: (repr(old), repr(new)) for key, (old, new) in differences.items()}
        if meta.get("data", self.data) != self.data:  # checkpoints written before the data was recorded pass
            differing["training data"] = (_describe_data(meta["data"]), _describe_data(self.data))
        if differing:
            raise RunMismatchError(_describe_mismatch(self.work_dir, differing))

    def _resume(self) -> int:
        path = self._checkpoint_path()
        meta = checkpoint_meta(path, required=("epoch", "history", "recipe", "schedulers", "rng"))
        if meta is None:
            return 0
        self._check_same_run(meta)
        meta = load_checkpoint(path, self.modules, self.optimizers)
        for sched, state in zip(self.schedulers, meta["schedulers"]):
            sched.load_state_dict(state)
        self.generator.set_state(torch.tensor(meta["rng"], dtype=torch.uint8))
        if "torch_rng" in meta:  # global stream (dropout); absent in checkpoints written before it was saved
            torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
        if "cuda_rng" in meta and self.device.type == "cuda":  # dropout on CUDA draws from the device's stream
            torch.cuda.set_rng_state(torch.tensor(meta["cuda_rng"], dtype=torch.uint8), self.device)
        self.history = meta["history"]
        log.info("resumed %s at epoch %d", self.work_dir, meta["epoch"])
        return int(meta["epoch"])

    def _save(self, epoch: int) -> None:
        meta = {"epoch": epoch, "history": self.history, "recipe": self.recipe.to_json(), "data": self.data,
                "teacher_weights": self.teacher_weights,
                "schedulers": [scheduler_state(s) for s in self.schedulers], "rng": self.generator.get_state().tolist(),
                "torch_rng": torch.get_rng_state().tolist()}
        if self.device.type == "cuda":
            meta["cuda_rng"] = torch.cuda.get_rng_state(self.device).tolist()
        save_checkpoint(self._checkpoint_path(), self.modules, self.optimizers, meta)

    def fit(self, progress: bool = True) -> nn.Module:
        """Train (resuming if a checkpoint exists) and return the model in eval mode.

        cuDNN runs its deterministic algorithms meanwhile (its flags are restored after), so that on a
        GPU too a seed gives one run and a resumed run ends with the uninterrupted run's weights. Its
        default algorithms add in varying order: on an H100 the first epoch's loss of two runs of one
        seed differed, and a resumed tiny run's weights moved by up to 0.05 from the uninterrupted run's."""
        cudnn = torch.backends.cudnn
        before = cudnn.deterministic, cudnn.benchmark  # only these two: the user's other flags stay
        cudnn.deterministic, cudnn.benchmark = True, False
        try:
            return self._fit(progress)
        finally:
            cudnn.deterministic, cudnn.benchmark = before

    def _fit(self, progress: bool) -> nn.Module:
        from tqdm import tqdm

        start = self._resume()
        for epoch in range(start, self.recipe.epochs):
            self._set_train_mode()
            order = torch.randperm(len(self.labels), generator=self.generator)
            sums: dict[str, float] = {}
            t0 = time.time()
            bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{self.recipe.epochs}", disable=not progress, leave=False)
            for step in bar:
                index = order[step * self.recipe.batch_size:(step + 1) * self.recipe.batch_size]
                stats = self.step_fn(*self._batch(index))
                for sched in self.schedulers:
                    sched.step()
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
            record = {k: v / self.steps_per_epoch for k, v in sums.items()}
            check_converging(record["loss"], epoch + 1, self.work_dir)
            record.update(epoch=epoch + 1, seconds=round(time.time() - t0, 1))
            if self.val_set is not None:
                record["val_acc"] = accuracy(self.model, self.val_set, self.recipe.resolution, self.device)
            self.history.append(record)
            log.info("%s %s", self.work_dir.name, json.dumps(record))
            self._save(epoch + 1)
        return self.model.eval()


def check_converging(mean_loss: float, epoch: int, work_dir: Path) -> None:
    """RuntimeError when an epoch's mean loss is NaN or infinite: the weights are then NaN for good (fp32,
    no loss scaling), and the run went on for every epoch left before export refused them. Raised
    before the epoch's checkpoint is written, so the work dir keeps the last finite one."""
    if not math.isfinite(mean_loss):
        raise RuntimeError(f"training diverged in epoch {epoch} (mean loss {mean_loss}); stopped, the checkpoint of "
                           f"the epoch before is kept in {work_dir}. Train with another --seed or a larger "
                           "--batch-size, in another --work-dir")


@torch.inference_mode()
def predict_logits(model: nn.Module, images: np.ndarray, native: int, device: torch.device | str = "cpu",
                   eval_resolution: int | None = None, batch_size: int = 512, tta: bool = False) -> torch.Tensor:
    """Logits for 48x48 uint8 faces degraded to ``eval_resolution`` (default: native) and brought to the
    model's native size: area down-sampling, or bicubic up-sampling when the face is smaller.
    Normalised as :func:`normalizer` says (the model's spec mean/std for a loaded model). ``tta``: each
    face's logits averaged with its mirror image's, as :class:`lrfer.Recognizer` with ``tta=True`` does."""
    from lrfer.faces.degrade import upsample
    from lrfer.tta import check_tta, mean_over_mirror_images, with_mirror_images

    tta = check_tta(tta)
    norm = normalizer(model)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).unsqueeze(1).float().div_(255).to(device)
        x = to_native(x, eval_resolution or native)
        if x.shape[-1] < native:
            x = upsample(x, native)
        elif x.shape[-1] > native:
            x = to_native(x, native)
        x = norm(x)
        if tta:
            out.append(mean_over_mirror_images(model(with_mirror_images(x)).float()).cpu())
        else:
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, faces: FaceSet, native: int, device: torch.device | str = "cpu") -> float:
    logits = predict_logits(model, faces.images, native, device)
    return float((logits.argmax(1).numpy() == faces.labels).mean())
