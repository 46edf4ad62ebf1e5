"""The ``lrfer`` command line: ``models``, ``info``, ``download``, ``predict``, ``train``, ``eval``.

``lrfer --help`` stays fast: torch, the models and the detector are imported only inside the
command that needs them. ``train`` and ``eval`` are registered by :mod:`lrfer.train.cli`, imported
only when one of them is run.

    lrfer models "gmenet-*"
    lrfer info gmenet-fer2013-16px
    lrfer predict photos/ --out faces.csv --annotate annotated/
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, cast, overload

from lrfer import __version__
from lrfer.constants import MIN_FACE_PX

if TYPE_CHECKING:
    from lrfer.io import DecodeSlots, ImageFileDataset, ImageFiles, PackedImages

logger = logging.getLogger("lrfer")

TRAIN_COMMANDS = ("train", "eval")
#: ``--out -``: the rows go to stdout, as CSV or (``--format jsonl``) JSONL.
STDOUT = "-"
OUT_FORMATS = ("csv", "jsonl")
DETECTOR_CHOICES = ("auto", "blazeface", "mtcnn", "haar", "facenet", "none")
#: Images passed to one ``Recognizer.predict`` call (an "image batch"); on a GPU larger batches
#: amortise each detection call's fixed cost (kernel launches, host syncs).
DEFAULT_IMAGE_BATCH = 16
DEFAULT_GPU_IMAGE_BATCH = 64
#: CPU threads of torch in the ``lrfer predict`` process when the models run on CUDA: its CPU work is
#: launching kernels and copying, and torch's idle-spinning CPU threads took the cores it and the
#: decoding workers need (H100 machine, 16 cores: 221 -> 278 photos/s at 480 px with one thread).
GPU_HOST_THREADS = 1
#: Image batches ``lrfer predict`` scores at once (``--streams``), each on a thread of its own: on CPU
#: two, sharing the cores (one torch thread each on 2 cores: 300 photos of 480 px in 4.7-4.9 s against
#: 5.3-5.8 s for one batch at a time on two threads; see docs/speed.md, stop 34); on CUDA one, until
#: a GPU has measured more (each stream also queues on a CUDA stream of its own).
DEFAULT_CPU_STREAMS = 2
DEFAULT_GPU_STREAMS = 1
#: Most images per decoding-worker batch, returned to the main process as one tensor and regrouped
#: there into image batches. The main process pays a socket handshake with the worker for every
#: tensor it receives (the shared memory's file descriptor): with a tensor per photo, as before, that
#: took 0.43-0.64 ms of its time per 480 px photo, with 32 photos per tensor 0.16-0.23 ms
#: (``benchmarks/loader.py``, 2 cores). Workers share each image batch (the first is ready after 32
#: decodes per worker, not 64 or 256 by one), and about one image batch more than those being scored
#: waits decoded in shared memory, not ``2 * workers`` of them.
DECODE_BATCH = 32
#: Seconds ``lrfer predict`` waits for a decoding worker's batch before it decodes the remaining files
#: itself: a safety net (a batch of 32 large photos decodes in seconds), so that a worker stuck
#: without an error never leaves the run waiting forever.
DECODE_TIMEOUT_S = 600
#: Bytes of a decoded photo that a decoding worker's reusable shared-memory slot holds
#: (:class:`~lrfer.io.DecodeSlots`; 1 MiB: 480x360 RGB is 0.5 MiB, 640x480 0.9 MiB). Batches of
#: larger photos travel in a segment of their own, as with 0 here.
DECODE_SLOT_BYTES = 2**20


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The full argument parser.

    >>> build_parser().parse_args(["models", "gmenet-*"]).pattern
    'gmenet-*'
    """
    parser = argparse.ArgumentParser(
        prog="lrfer",
        description="Low-resolution facial expression recognition: a model zoo that still reads 8-32 px faces.",
    )
    parser.add_argument("--version", action="version", version=f"lrfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_models(sub)
    _add_info(sub)
    _add_download(sub)
    _add_predict(sub)
    _add_train_eval(sub)
    for command in {id(p): p for p in sub.choices.values()}.values():  # an alias names its command's parser again
        add_verbose_after_command(command)
    return parser


def add_verbose_after_command(p: argparse.ArgumentParser) -> None:
    """``-v`` after the command too (``lrfer predict photos/ -v``): argparse took it for the command's own
    and stopped with "unrecognized arguments: -v". SUPPRESS keeps an absent one from resetting the
    main parser's; ``main`` reads the level from the whole command line. Placeholders skipped."""
    if any(a.nargs == argparse.REMAINDER for a in p._actions):
        return
    try:
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log progress details (INFO level)")
    except argparse.ArgumentError:  # the command has a -v of its own
        pass


def _first_command(argv: Sequence[str] | None) -> str | None:
    args = sys.argv[1:] if argv is None else list(argv)
    return next((a for a in args if not a.startswith("-")), None)


def _add_models(sub: Any) -> None:
    # `lrfer list` too (what pip, conda and ollama call it): it was an argparse error
    p = sub.add_parser("models", aliases=["list"],
                       help="list the zoo's models (name, arch, resolution, accuracy, source)")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. 'gmenet-*'")
    p.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                   help="leave out the names matching this fnmatch pattern, e.g. '*-8px' (repeatable; "
                        "list_models' exclude_filters)")
    p.set_defaults(func=cmd_models)


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="show one model's details, architecture config, alignment, metrics and "
                                    "licences (code, weights, data)")
    p.add_argument("name", help="model name from `lrfer models`, a .safetensors file, a folder with "
                                "lrfer_config.json (or with one .safetensors file lrfer wrote) or hf://org/repo@commit")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--config", action="store_true",
                   help="print the model's lrfer_config.json (its manifest entry, without source), e.g. to publish "
                        "a trained .safetensors file on the Hub")
    add_cache_dir_option(p)
    p.set_defaults(func=cmd_info)


def _add_download(sub: Any) -> None:
    p = sub.add_parser("download", help="fetch and verify a model's weights for offline use")
    p.add_argument("name", nargs="+", help="model name(s) from `lrfer models`, or Hub ids (hf://ORG/REPO@COMMIT)")
    add_cache_dir_option(p)
    p.set_defaults(func=cmd_download)


def add_cache_dir_option(p: argparse.ArgumentParser) -> None:
    """``--cache-dir DIR`` of the commands that load weights (``download``, ``info``, ``predict``, ``eval``)."""
    p.add_argument("--cache-dir", type=_folder, default=None, metavar="DIR",
                   help="where Hub weights are fetched to and looked for (default: $LRFER_CACHE, else "
                        "huggingface_hub's cache); bundled models ignore it")


def _folder(text: str) -> Path:
    if not text.strip():  # Path("") is the working folder: an unset shell variable, most likely
        raise argparse.ArgumentTypeError("an empty folder name")
    return Path(text)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="detect faces in images and read their expressions",
        description="Detect faces in image files and folders (recursive), or in the frames of video files, and "
        "classify their expressions. One row per face: file, face index, box, face_px, det_score, label, one "
        "column per class; with a video among the inputs also the frame index and its time in seconds.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image and video files, or folders of them (searched recursively); videos (.mp4, .avi, "
                        ".mov, .mkv, ...) are scored frame by frame after the images, their rows with 'frame' and "
                        "'time_s' columns")
    p.add_argument("--model", default=None, help="model name, .safetensors file, folder or hf://org/repo[@rev] "
                   "(default: the manifest's default model)")
    p.add_argument("--out", type=_out_path, default=None, metavar="FILE",
                   help="write rows to this .csv or .jsonl file, or with '-' to stdout as CSV (--format jsonl: JSONL), "
                        "for a pipe (default: a table on stdout)")
    p.add_argument("--format", type=str.lower, choices=OUT_FORMATS, default=None,
                   help="format of --out: csv or jsonl (default: --out FILE's suffix; csv for --out -); a file name "
                        "with another suffix needs it")
    p.add_argument("--annotate", type=Path, default=None, metavar="DIR",
                   help="write annotated copies of the images and videos here (a video as .mp4), mirroring the "
                        "folders' layout")
    p.add_argument("--overwrite", action="store_true",
                   help="--annotate: replace files already in DIR (default: a copy whose name is taken gets -2, -3, ...)")
    p.add_argument("--every", type=_positive_int, default=1, metavar="N",
                   help="videos: score every N-th frame, from the first (default: 1, every frame)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--precision", type=str.lower, choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="expression model precision: auto = fp16 on CUDA, fp32 on CPU (with the auto detector's "
                        "small-face search, MTCNN's P-Net, in bf16 on CPUs with native bf16); bf16 is faster on CPUs "
                        "with AVX-512 bf16 (probabilities within 0.026 of fp32 on FER2013 PublicTest) and also runs "
                        "MTCNN's P-Net in bf16; fp16 needs CUDA (default: auto)")
    p.add_argument("--tta", action="store_true",
                   help="also classify each face's mirror image and average the two (test-time augmentation): "
                        "0.06-1.5 points more accuracy on FER2013 for twice the expression model's work")
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="N",
                   help="faces per model call (default: 256)")
    p.add_argument("--image-batch", type=_positive_int, default=None, metavar="N",
                   help=f"images detected together (default: {DEFAULT_IMAGE_BATCH} on CPU, "
                        f"{DEFAULT_GPU_IMAGE_BATCH} on CUDA)")
    p.add_argument("--min-face", type=_min_face, default=20, metavar="PX",
                   help=f"smallest face width searched, >= {MIN_FACE_PX} (default: 20; below 12 MTCNN searches an enlarged "
                        "photo); MTCNN's boxes can come out narrower (down to about 0.4x for faces below it)")
    p.add_argument("--detector", type=str.lower, choices=DETECTOR_CHOICES, default="auto",
                   help="face detector: auto = BlazeFace plus MTCNN for faces too small for it; "
                        "'none' = every image is already a face crop, scored on the centred square of its "
                        "shorter side (default: auto)")
    p.add_argument("--no-close-ups", dest="close_ups", action="store_false",
                   help="skip BlazeFace's zoomed-out second look at images without a face (for faces that fill "
                        "them): faster on frames where nobody fills the picture (CCTV, crowds)")
    p.add_argument("--workers", type=_non_negative_int, default=None, metavar="N",
                   help="image-decoding worker processes (default: half the CPUs, at most 4; 0 = decode in-process)")
    p.add_argument("--streams", type=_positive_int, default=None, metavar="N",
                   help="image batches (or steps of video frames) scored at once, each on a thread and (on CUDA) "
                        "a CUDA stream of its own; on CPU they share the cores' torch threads (default for images: "
                        f"{DEFAULT_CPU_STREAMS} on CPU with 2 cores or more, else 1, and 1 where OMP_NUM_THREADS or the like "
                        f"is set; {DEFAULT_GPU_STREAMS} on CUDA; for videos too, at most one per step of frames)")
    add_cache_dir_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no closing summary on stderr")
    p.set_defaults(func=cmd_predict)


def _add_train_eval(sub: Any) -> None:
    """``train``/``eval`` come from :mod:`lrfer.train.cli` (light imports); placeholders if it is missing."""
    if train_cli_error() is None:
        from lrfer.train.cli import register

        register(sub)
        return
    for name in TRAIN_COMMANDS:  # main() reports why before parsing; these only keep --help complete
        p = sub.add_parser(name, help="(unavailable: lrfer.train.cli cannot be imported)", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)


def train_cli_error() -> str | None:
    """Why ``lrfer.train.cli`` cannot be imported, or ``None`` when it can."""
    try:
        import lrfer.train.cli  # noqa: F401
    except ImportError as err:
        if err.name is not None and not err.name.startswith("lrfer"):
            raise  # a missing third-party dependency: let its own message through
        return str(err)
    return None


def _out_path(text: str) -> Path | str:
    """``--out``: :data:`STDOUT` for ``-`` (a file named ``-`` is ``./-``), else a :class:`Path`."""
    if text == STDOUT:
        return STDOUT
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty file name (use - for stdout)")
    return Path(text)


def _positive_int(text: str) -> int:
    return _whole_number(text, at_least=1)


def _min_face(text: str) -> int:
    """``--min-face``: refused when parsed, not after the files are listed and the model loaded."""
    return _whole_number(text, at_least=MIN_FACE_PX)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, at_least=0)


def _whole_number(text: str, at_least: int) -> int:
    """argparse's ``type`` for counts: its own message named the function ("invalid _positive_int value")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {at_least}, got {text!r}") from None
    if value < at_least:
        raise argparse.ArgumentTypeError(f"must be >= {at_least}, got {value}")
    return value


# ------------------------------------------------------------------------------------------ commands
def cmd_models(args: argparse.Namespace) -> int:
    """``lrfer models [PATTERN] [--exclude PATTERN]...``: a table of the manifest's models."""
    from lrfer.zoo import get_spec, list_models, load_manifest

    names = list_models(args.pattern, exclude_filters=args.exclude)
    if not names:
        if args.exclude and list_models(args.pattern):
            print(f"no models left once --exclude {' '.join(map(repr, args.exclude))} removed the matching names")
        else:
            print(_no_match_message(args.pattern) if args.pattern else "the weights manifest lists no models yet")
        return 0
    default = load_manifest().default
    rows = [_model_row(get_spec(n), n == default) for n in names]
    _print_table(["name", "arch", "res", "val acc", "source"], rows)
    return 0


def _no_match_message(pattern: str) -> str:
    """``lrfer models PATTERN``'s line when no name matches: a pattern without wildcards matches one whole
    name only (fnmatch, as timm's ``list_models``), so ``lrfer models gmenet`` is shown its ``gmenet*``.

    >>> _no_match_message("gmenet")
    "no models match 'gmenet' (an fnmatch pattern, matched against whole names: try 'gmenet*' or '*gmenet*')"
    """
    if any(c in pattern for c in "*?["):
        return f"no models match {pattern!r}"
    return (f"no models match {pattern!r} (an fnmatch pattern, matched against whole names: try "
            f"'{pattern}*' or '*{pattern}*')")


def _model_row(spec: Any, is_default: bool) -> list[str]:
    acc = publictest_accuracy(spec.metrics)
    return [spec.name + (" (default)" if is_default else ""), spec.arch, f"{spec.resolution}px",
            "-" if acc is None else f"{acc:.1%}", describe_source(spec.source)]


def publictest_accuracy(metrics: Any) -> float | None:
    """FER2013 PublicTest (validation) accuracy from a manifest ``metrics`` entry, as a 0..1 fraction.

    Looks for a numeric key naming PublicTest (``publictest_acc``, ``fer2013_publictest_acc`` ...),
    or a ``publictest`` object with ``acc``/``accuracy``.

    >>> publictest_accuracy({"publictest_acc": 0.61})
    0.61
    """
    for key, value in dict(metrics or {}).items():
        k = key.lower()
        if "publictest" not in k and k not in ("val_acc", "val_accuracy", "validation_acc", "validation_accuracy"):
            continue
        if isinstance(value, dict) or hasattr(value, "items"):
            value = dict(value).get("acc", dict(value).get("accuracy"))
        elif "acc" not in k:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) / 100 if value > 1 else float(value)
    return None


def describe_source(source: Any) -> str:
    """``bundled`` / ``hf://org/repo@abcdef0`` / a local path."""
    kind = source.get("kind")
    if kind == "hub":
        return f"hf://{source['repo_id']}@{source['revision'][:7]}"
    if kind == "local":
        return str(source.get("path", "local"))
    return str(kind)


def cmd_info(args: argparse.Namespace) -> int:
    """``lrfer info NAME``: details, architecture config, alignment, metrics and licences."""
    from lrfer.zoo import config_entry, info

    if args.config:
        print(json.dumps(config_entry(args.name, cache_dir=args.cache_dir), indent=2))
        return 0
    data = info(args.name, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for line in info_lines(data):
        print_text(line)
    return 0


def info_lines(data: dict[str, Any], depth: int = 0) -> Iterator[str]:
    """``lrfer info``'s text: ``key: value`` lines, a dict's items below its key one per line, indented
    (at any depth: a nested dict such as ``publictest_accuracy_by_px`` came out as a Python repr), the
    keys of a ``*_by_px`` dict in px; a list's items joined with commas. Empty top-level values are left out.

    >>> print("\\n".join(info_lines({"metrics": {"acc": 0.59, "acc_by_px": {"8": 0.35}}, "mean": [0.5], "paper": ""})))
    metrics:
      acc: 0.59
      acc_by_px:
        8 px: 0.35
    mean: 0.5
    """
    pad = "  " * depth
    for key, value in data.items():
        if isinstance(value, dict):
            yield f"{pad}{key}:"
            items = {f"{k} px": v for k, v in value.items()} if str(key).endswith("_by_px") else value
            yield from info_lines(items, depth + 1)
        elif isinstance(value, list):
            yield f"{pad}{key}: {', '.join(_info_item(v) for v in value)}"
        elif depth or value not in ("", None):
            yield f"{pad}{key}: {value}"


def _info_item(value: Any) -> str:
    """One item of a list in ``lrfer info``'s text: a dict or list as compact JSON, not a Python repr."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


#: Errors of one name of ``lrfer download NAME...``: the others are still fetched and verified
#: (:func:`main` reports the same kinds for one name; a ``HubDownloadError`` is an ``OSError``).
DOWNLOAD_ERRORS = (ValueError, KeyError, ImportError, RuntimeError, OSError)


def cmd_download(args: argparse.Namespace) -> int:
    """``lrfer download NAME...``: fetch, verify and print the local path of each. With several names
    each failure is told (its message naming the model, or after it) and the rest are still tried; the
    status is 1 if any failed."""
    from lrfer.zoo import WEIGHTS_DIR, download

    failed = 0
    for name in args.name:
        try:
            path = download(name, cache_dir=args.cache_dir)
        except DOWNLOAD_ERRORS as err:
            if len(args.name) == 1:  # main reports its error as it is
                raise
            failed += 1
            logger.debug("details", exc_info=True)
            message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
            logger.error("%s", message if name in message else f"{name}: {message}")  # named once
            continue
        if path.is_relative_to(WEIGHTS_DIR):  # the path alone left "was it downloaded?" open
            print(f"lrfer: {name} is bundled with lrfer: its file was verified, nothing was downloaded",
                  file=sys.stderr)
        print_text(str(path))
    if failed:
        logger.error("%d of %d model(s) could not be downloaded (see the errors above)", failed, len(args.name))
    return 1 if failed else 0


def print_text(text: str) -> None:
    """``print``, with what stdout's encoding cannot show replaced as :func:`readable` does, rather than an
    error once the command's work is done (a path with bytes that are not UTF-8 under a strict UTF-8 locale,
    a Cyrillic home folder on a cp1252 console)."""
    try:
        print(text)
    except UnicodeEncodeError:  # raised before anything of the line was written
        print(readable(text, getattr(sys.stdout, "encoding", None)))


def cmd_predict(args: argparse.Namespace) -> int:
    """``lrfer predict PATH...``: stream one row per face to CSV/JSONL or a stdout table."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from lrfer.io import iter_image_files
    from lrfer.video import is_video_file, iter_video_files

    fmt = out_format(args.out, args.format)  # a mistake there is told now, not after the files are listed and the model loaded
    videos = iter_video_files(args.paths)
    unlisted: list[OSError] = []  # the image walk sees every folder the video walk sees
    files = iter_image_files([p for p in args.paths if not (is_video_file(p) and Path(p).is_file())], unlisted)
    for err in unlisted:
        logger.warning("skipped: cannot list folder %r: %s", os.fsdecode(err.filename), err.strerror or err)
    if not files and not videos:
        logger.error("no image or video files found in %s", " ".join(args.paths))
        return 1
    check_out_file(args.out)  # before the model loads, which takes seconds (minutes on first use of a Hub model)
    rec = load_recognizer(args)
    logger.info("%s on %d image(s) and %d video(s)", rec, len(files), len(videos))
    args.annotated = None if args.annotate is None else AnnotatedPaths(
        args.annotate, args.paths, [path for path, _ in files] + [path for path, _ in videos], args.overwrite)
    counts = {"images": 0, "frames": 0, "faces": 0, "unread": len(unlisted), "unwritten": 0, "partial": 0}
    # warnings go above the progress bar, not into the middle of its line
    writer = open_writer(args.out, rec.classes, video=bool(videos), fmt=fmt)
    with logging_redirect_tqdm(tqdm_class=_stderr_write_tqdm()), writer as write:
        if files:
            image_batch = args.image_batch or (DEFAULT_GPU_IMAGE_BATCH if rec.device.type == "cuda" else DEFAULT_IMAGE_BATCH)
            # no more streams than image batches: a photo or a few, one batch, keeps every core
            streams = min(args.streams or default_streams(rec.device), math.ceil(len(files) / image_batch))
            with host_threads(rec.device, streams):
                _predict_images(rec, files, image_batch, streams, args, write, counts)
        for video, rel in videos:
            _predict_video(rec, video, rel, args, write, counts)
    summary = f"{counts['images']} image(s), {counts['frames']} video frame(s): {counts['faces']} face(s)"
    if args.quiet:
        logger.info("%s", summary)
    else:  # with no face, the table on stdout stays empty: say what was scored
        print(f"lrfer: {summary}", file=sys.stderr)
    if counts["unread"]:
        logger.warning("%d file(s) or folder(s) could not be read (see the warnings above)", counts["unread"])
    if counts["unwritten"]:
        logger.warning("%d annotated file(s) could not be written (see the warnings above)", counts["unwritten"])
    if counts["partial"]:
        logger.warning("%d video(s) ended before the frames their header announces, truncated or damaged: their "
                       "rows stop early (see the warnings above)", counts["partial"])
    return 1 if counts["unread"] or counts["unwritten"] or counts["partial"] else 0


def load_recognizer(args: argparse.Namespace) -> Any:
    """``lrfer.load`` with ``predict``'s options, its errors and warnings in the options' terms
    (:func:`options_in_errors`): ``--device`` and ``--precision`` are checked first, each on its own,
    so that an error about one names it."""
    import lrfer
    from lrfer.recognizer import check_precision, resolve_device

    given = {"--device": args.device, "--precision": args.precision, "--detector": args.detector}
    with options_in_errors(given, "--device"):
        device = resolve_device(args.device)
    with options_in_errors(given, "--precision"):
        check_precision(args.precision, device)
    detector = None if args.detector == "none" else args.detector
    with options_in_errors(given):
        return lrfer.load(args.model, device=args.device, detector=detector, min_face=args.min_face,
                          precision=args.precision, close_ups=args.close_ups, cache_dir=args.cache_dir, tta=args.tta)


#: ``lrfer.load``'s arguments as its messages name them (``device='cpu'``, ``detector=None``, with
#: further values: ``device='cpu' or 'auto'``): :func:`as_options` writes them as ``predict``'s options.
PYTHON_ARGUMENT = re.compile(r"\b(device|precision|detector)=('[^']*'|None)((?: or '[^']*')*)")
#: Loggers whose warnings :func:`options_in_errors` puts in the options' terms while the block runs.
LOAD_LOGGERS = ("lrfer.recognizer", "lrfer.faces.detect")


def as_options(message: str) -> str:
    """A message of lrfer's for Python users, its arguments written as ``lrfer predict``'s options.

    >>> as_options("device 'cuda' requested but CUDA is not available; use device='cpu' or 'auto'")
    "device 'cuda' requested but CUDA is not available; use --device cpu or auto"
    >>> as_options("detector='facenet' needs facenet-pytorch (or use detector='mtcnn')")
    '--detector facenet needs facenet-pytorch (or use --detector mtcnn)'
    """
    def option(match: re.Match[str]) -> str:
        values = [match.group(2), *re.findall(r"'[^']*'", match.group(3))]
        return f"--{match.group(1)} " + " or ".join(v.strip("'").lower() if v == "None" else v.strip("'") for v in values)

    return PYTHON_ARGUMENT.sub(option, message)


class _OptionTerms(logging.Filter):
    """A logger's records with :func:`as_options` applied to their message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if PYTHON_ARGUMENT.search(message):
            record.msg, record.args = as_options(message), None
        return True


@contextmanager
def options_in_errors(given: dict[str, str], option: str | None = None) -> Iterator[None]:
    """The block's ValueError, ImportError or RuntimeError (an error of lrfer's, whose messages name
    Python's arguments, ``device='cpu'``, for Python users) raised again naming ``option`` and its
    value in ``given`` first (``--device cuda: ...``), the arguments in its message written as options
    (:func:`as_options`). Without ``option``, the first option the message names then, if any;
    otherwise the error goes on as it was. Warnings of :data:`LOAD_LOGGERS` are written as options too."""
    terms = _OptionTerms()
    loggers = [logging.getLogger(name) for name in LOAD_LOGGERS]
    for log in loggers:
        log.addFilter(terms)
    try:
        yield
    except (ValueError, ImportError, RuntimeError) as err:
        message = as_options(str(err))
        named = [o for o in given if re.search(rf"(?<!\S){o} ", message)]
        named.sort(key=lambda o: message.index(f"{o} "))
        option = option or (named[0] if named else None)
        if option is None:
            raise
        if not message.startswith(f"{option} "):
            message = f"{option} {given[option]}: {message}"
        kind = next(k for k in (ValueError, ImportError, RuntimeError) if isinstance(err, k))
        raise kind(message) from err
    finally:
        for log in loggers:
            log.removeFilter(terms)


def _predict_images(rec: Any, files: ImageFiles, image_batch: int, streams: int, args: argparse.Namespace,
                    write: Callable[[dict[str, Any]], object], counts: dict[str, int]) -> None:
    """The rows of ``files``, ``image_batch`` images at a time decoded by worker processes and scored
    ``streams`` batches at once. Interrupted, it stops at once: the batches being scored stop at their
    next :func:`~lrfer.overlap.stop_if_cancelled` (Python's exit waits for that), their rows dropped."""
    from tqdm import tqdm

    from lrfer.overlap import overlapped

    bar = tqdm(total=len(files), unit="img", file=sys.stderr, disable=args.quiet or None, dynamic_ncols=True)
    decoded = iter_decoded(files, args.workers, image_batch, streams)
    scored = overlapped(functools.partial(score_batch, rec, args.batch_size), decoded, streams, rec.device)
    # closed here, the scoring threads first, not when an exception's traceback lets them go: the
    # decoding workers then stop while a SIGTERM's handling still expects them to
    with closing(decoded), closing(scored):
        for batch, results in scored:
            _write_batch(batch, results, files, args, write, counts)
            bar.update(len(batch))
    bar.close()


def _predict_video(rec: Any, video: Path, rel: Path, args: argparse.Namespace,
                   write: Callable[[dict[str, Any]], object], counts: dict[str, int]) -> None:
    """Every ``--every``-th frame of one video, ``--streams`` steps of frames at once: rows with
    ``frame`` and ``time_s``, and with ``--annotate DIR`` an annotated copy ``DIR/<rel>`` with suffix ``.mp4``."""
    # predict_video_frames shares the block's count among its streams at the call (each stream's threads
    # are taken from it there), and the frames are scored as they are iterated: both inside the block
    with host_threads(rec.device, 1):
        headers: list[Any] = []  # the header its decoder reads on opening the file: it is opened once
        try:
            # no more streams than steps of frames: predict_video_frames decides that (even_steps)
            streams = args.streams or default_streams(rec.device)
            frames = rec.predict_video_frames(video, every=args.every, batch_size=args.batch_size, streams=streams,
                                              on_info=headers.append)
        except ValueError as err:  # missing, unreadable, a still image, or no frame decoded
            logger.warning("skipped: %s", err)
            counts["unread"] += 1
            return
        info = headers[0]  # given before predict_video_frames returned
        total = math.ceil(info.frame_count / args.every) if info.frame_count else None
        _write_video_rows(frames, video, rel, info, total, args, write, counts)


def _write_video_rows(frames: Generator[Any, None, None], video: Path, rel: Path, info: Any, total: int | None,
                      args: argparse.Namespace, write: Callable[[dict[str, Any]], object],
                      counts: dict[str, int]) -> None:
    from tqdm import tqdm

    from lrfer.video import AnnotatedVideoWriter

    bar = tqdm(total=total, unit="frame", desc=video.name, file=sys.stderr, disable=args.quiet or None, dynamic_ncols=True)
    annotated = None
    ended_early = EndedEarlyCounter()
    try:
        if args.annotated is not None:  # a name OpenCV cannot write: skipped before any row is written
            with writing_copy():
                annotated = AnnotatedVideoWriter(args.annotated.target(video, rel.with_suffix(".mp4")),
                                                 info.fps / args.every)
        with ended_early:
            for frame, pixels in frames:
                if annotated is not None:  # first: a writer OpenCV cannot open skips the video before its rows
                    with writing_copy():
                        annotated.write(pixels, frame.faces)
                for row in frame.to_rows(str(video)):
                    write(row)
                counts["frames"] += 1
                counts["faces"] += len(frame.faces)
                bar.update(1)
        counts["partial"] += min(ended_early.count, 1)
    except CopyNotWritten as err:
        logger.warning("skipped: %s", err)
        counts["unwritten"] += 1
    except (ValueError, RuntimeError) as err:  # no frame decoded
        logger.warning("skipped: %s", err)
        counts["unread"] += 1
    finally:
        frames.close()  # now, not when an interrupt's traceback lets it go: its steps stop, its decoding thread ends
        bar.close()
        if annotated is not None:
            annotated.close()


class CopyNotWritten(Exception):
    """An annotated copy that cannot be written (its error's message): counted apart from the inputs that
    cannot be read, so that ``predict``'s summary tells the two apart."""


@contextmanager
def writing_copy() -> Iterator[None]:
    """The block's ValueError, RuntimeError or OSError (a name OpenCV cannot write, a writer it cannot
    open, a folder it cannot make, a full disk) raised again as :class:`CopyNotWritten`."""
    try:
        yield
    except (ValueError, RuntimeError, OSError) as err:
        raise CopyNotWritten(str(err)) from err


class EndedEarlyCounter(logging.Handler):
    """Within ``with``, counts the warnings of videos that ended before their announced frames (logged
    by the reading thread, which alone knows how many frames it decoded, also between the frames
    ``--every`` skips)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        from lrfer.video import ENDED_EARLY

        self.count += bool(getattr(record, ENDED_EARLY, False))

    def __enter__(self) -> "EndedEarlyCounter":
        logging.getLogger("lrfer.video").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("lrfer.video").removeHandler(self)


def default_streams(device: Any) -> int:
    """``--streams`` unless given: :data:`DEFAULT_GPU_STREAMS` on CUDA; on CPU
    :data:`DEFAULT_CPU_STREAMS` (at most one per core), or 1 where the environment chose the threads
    (``OMP_NUM_THREADS`` and the like: all of them for one batch at a time)."""
    from lrfer.recognizer import cpu_threads, threads_chosen_by_user

    if device.type == "cuda":
        return DEFAULT_GPU_STREAMS
    return 1 if threads_chosen_by_user() else min(DEFAULT_CPU_STREAMS, cpu_threads())


@contextmanager
def host_threads(device: Any, streams: int) -> Iterator[None]:
    """torch's CPU threads for ``streams`` batches at once while the block runs, unless the environment
    chose (``OMP_NUM_THREADS`` and the like): :data:`GPU_HOST_THREADS` on CUDA; on CPU the cores
    shared among the streams (each stream's thread runs its operators on that many). The count
    before is restored after (``main`` called in-process, by a benchmark or a test)."""
    import torch

    from lrfer.recognizer import cpu_threads, threads_chosen_by_user

    before = torch.get_num_threads()
    if not threads_chosen_by_user():
        torch.set_num_threads(GPU_HOST_THREADS if device.type == "cuda" else max(1, cpu_threads() // streams))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def score_batch(rec: Any, batch_size: int, batch: list[tuple[int, Any]]) -> tuple[list[tuple[int, Any]], list[Any]]:
    """``batch`` and the faces of each of its decoded images (its unreadable files, error messages, skipped)."""
    images = [item for _, item in batch if not isinstance(item, str)]
    return batch, rec.predict(images, batch_size=batch_size, streams=1) if images else []  # --streams overlaps the batches


def _write_batch(batch: list[tuple[int, Any]], results: list[Any], files: ImageFiles, args: argparse.Namespace,
                 write: Callable[[dict[str, Any]], object], counts: dict[str, int]) -> None:
    """The rows (and annotated images) of a :func:`score_batch` result, a warning per unreadable file
    and per annotated copy that cannot be written (the image's rows are written all the same)."""
    faces_of_images = iter(results)
    for index, item in batch:
        if isinstance(item, str):
            logger.warning("skipped: %s", item)
            counts["unread"] += 1
            continue
        path, rel = files[index]
        faces = next(faces_of_images)
        for j, face in enumerate(faces):
            write(face.to_row(str(path), j))
        if args.annotated is not None:
            _save_copy(args.annotated, path, rel, item, faces, counts)
        counts["images"] += 1
        counts["faces"] += len(faces)


def _save_copy(annotated: AnnotatedPaths, path: Path, rel: Path, image: Any, faces: Sequence[Any],
               counts: dict[str, int]) -> None:
    """``--annotate``'s copy of one image; one that cannot be written is told and counted, and the run goes on."""
    from lrfer.annotate import annotated_path, save_annotated

    try:
        with writing_copy():
            save_annotated(annotated.target(path, annotated_path(rel)), image, faces)
    except CopyNotWritten as err:
        logger.warning("annotated copy of %s not written: %s", path, err)
        counts["unwritten"] += 1


class AnnotatedPaths:
    """Where ``--annotate DIR`` writes each input's copy: ``DIR/<relative name>``, never over an input,
    never twice in one run, and never over a file already there unless ``overwrite``: a name taken
    (``a.jpg`` from two folders given as files, ``v.mp4`` and ``v.avi``, an earlier run's copy) gets
    ``-2``, ``-3``, ... before its suffix, with a warning."""

    def __init__(self, root: Path, inputs: Sequence[str], files: Sequence[Path] = (), overwrite: bool = False) -> None:
        for raw in inputs:
            folder = Path(raw) if Path(raw).is_dir() else Path(raw).parent
            if folder.resolve() == root.resolve():
                raise ValueError(f"--annotate {str(root)!r} is the folder of the input {raw!r}: the annotated copies "
                                 "would overwrite the inputs; write them to another folder")
        made = not os.path.lexists(root)
        make_folder(root, "--annotate")  # now, not after the first rows
        if made:  # a folder of the user's, with photos, stays an input folder
            mark_annotated(root)
        self.root = root
        self.written: set[str] = set()
        # every input file of the run: --annotate inside an input folder must not replace one not read yet
        self.inputs = {os.path.realpath(path) for path in files}
        self.overwrite = overwrite

    def target(self, source: Path, rel: Path) -> Path:
        wanted = self.root / rel
        path, n = wanted, 1
        first_reason = reason = self._taken(path, source)
        while reason:
            n += 1
            path = wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")
            reason = self._taken(path, source)
        if first_reason:
            logger.warning("annotated copy of %s written to %s: %s %s", source, path, wanted, first_reason)
        self.written.add(os.path.abspath(path))
        return path

    def _taken(self, path: Path, source: Path) -> str:
        """Why ``path`` cannot take a copy ('' if it can)."""
        if os.path.abspath(path) in self.written:
            return "was written earlier in this run"
        real = os.path.realpath(path)
        if real == os.path.realpath(source) or real in self.inputs:
            return "is an input"
        if os.path.islink(path):  # written through, it would replace a file outside the folder
            return "is a symbolic link"
        if not self.overwrite and os.path.lexists(path):
            return "exists (--overwrite replaces files in the --annotate folder)"
        return ""


def mark_annotated(folder: Path) -> None:
    """Leave :data:`~lrfer.io.ANNOTATED_MARKER` in ``folder``, which ``--annotate`` made: folder searches
    then leave it out, also where it is inside an input folder (``lrfer predict . --annotate annotated``
    run again scored the annotated copies as photos, and wrote copies of copies)."""
    from lrfer.io import ANNOTATED_MARKER

    (folder / os.fsdecode(ANNOTATED_MARKER)).write_text("annotated copies written by lrfer predict --annotate; "
                                                         "lrfer predict leaves this folder out of folder searches\n")


def make_folder(folder: Path, option: str) -> None:
    """``folder`` and its parents for ``option``'s files; a ValueError where a file is in the way
    (mkdir's own "File exists" named neither the option nor the cause)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise ValueError(f"{option}: cannot make the folder {str(folder)!r}: {err.strerror} "
                         "(a file is where a folder is needed)") from None
    except OSError as err:  # permission denied, a read-only file system: the bare errno message named no option
        raise ValueError(f"{option}: cannot make the folder {str(folder)!r}: {os_reason(err, folder)}") from None


def check_out_file(out: Path | str | None) -> None:
    """A ValueError, naming ``--out``, for a file that cannot be written, told before the model loads (it was
    told after): its missing folders are made and the file opened for appending, then closed; what this made
    is removed again (the writer makes it when the rows start, after the model loaded; an existing file is
    emptied only then). Left to the writer: stdout and anything that is not a regular file (a FIFO would
    wait for its reader)."""
    if out is None or out == STDOUT:
        return
    path = Path(out)
    existed = os.path.exists(path)  # False, not an OSError, for a name too long: open() tells that one
    if existed and not os.path.isfile(path):
        return
    missing = missing_folders(path.parent)
    try:
        make_folder(path.parent, "--out")
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as err:
            raise out_not_writable(path, err) from None
        if not existed:
            path.unlink(missing_ok=True)
    finally:
        for folder in missing:  # innermost first; one that could not be made is not there to remove
            try:
                folder.rmdir()
            except OSError:
                pass


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, innermost first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def out_not_writable(path: Path, err: OSError) -> ValueError:
    """The error for an ``--out`` file that cannot be opened for writing, whether :func:`check_out_file` finds
    it before the model loads or the writer when the rows start."""
    return ValueError(f"--out {str(path)!r}: cannot write the file: {os_reason(err, path)}")


def os_reason(err: OSError, path: Path) -> str:
    """``err``'s reason (``Permission denied``), with the path it is about where that is not ``path``
    (a parent that could not be made).

    >>> os_reason(PermissionError(13, "Permission denied", "/data"), Path("/data/out"))
    "Permission denied ('/data')"
    """
    reason = err.strerror or str(err)
    if err.filename is not None and os.fsdecode(err.filename) != str(path):
        reason += f" ({os.fsdecode(err.filename)!r})"
    return reason


# --------------------------------------------------------------------------------- streaming loader
def default_workers() -> int:
    """Decoding processes: half the usable CPUs (inference gets the rest), between 1 and 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def iter_decoded(files: ImageFiles, workers: int | None, image_batch: int,
                 scoring: int = 1) -> Generator[list[tuple[int, Any]], None, None]:
    """Batches of ``image_batch`` ``(file index, uint8 (H, W, 3) array | error message)``, in file
    order, decoded by worker processes, for a caller that scores ``scoring`` batches at once.

    A ``torch.utils.data.DataLoader`` over the file paths, so decoding overlaps inference and memory
    stays flat however many files there are. Workers decode :data:`DECODE_BATCH` files at a time and
    hand each such batch over in a reusable slot or as one tensor (:func:`~lrfer.io.pack_images`);
    :func:`regroup` makes the image batches. About ``scoring + 1`` image batches are decoded ahead. Where the
    workers cannot start, or fail later (shared memory full: Docker's /dev/shm is 64 MB; no batch for
    :data:`DECODE_TIMEOUT_S`), the files not yet delivered are decoded in-process, with a warning.
    """
    from lrfer.io import ImageFileDataset

    dataset = ImageFileDataset(files)
    workers = default_workers() if workers is None else workers
    decode_batch = min(DECODE_BATCH, image_batch)
    yield from regroup(_decoded_batches(dataset, workers, image_batch, decode_batch, scoring), image_batch)


def _decoded_batches(dataset: ImageFileDataset, workers: int, image_batch: int,
                     decode_batch: int, scoring: int) -> Iterator[list[tuple[int, Any]]]:
    """:func:`~lrfer.io.unpack_images` batches of ``dataset`` in order, from ``workers`` processes, the
    rest in-process once they report an error (workers start in ``iter()``, first use shared memory
    in ``next()``). A worker killed while this process is busy (the OOM killer) is torch's error: it
    stops the run."""
    from torch.utils.data import DataLoader, Dataset, Subset

    from lrfer.io import pack_images, unpack_images

    # torch annotates DataLoader and Subset with its Dataset class; they read any map-style dataset
    files = cast("Dataset[tuple[int, Any]]", dataset)
    slots: DecodeSlots | None = None

    def loader(n: int, first: int) -> Iterator[PackedImages]:
        nonlocal slots
        data = files if first == 0 else Subset(files, range(first, len(dataset)))
        prefetch = decode_prefetch(image_batch, n, decode_batch, scoring) if n else None
        slots = worker_slots(n, prefetch or 0, image_batch, decode_batch, scoring)
        if n:
            share_temp_dir_with_workers()
        collate = pack_images if slots is None else functools.partial(pack_images, slots=slots)
        return iter(DataLoader(data, batch_size=decode_batch, shuffle=False, num_workers=n, collate_fn=collate,
                               prefetch_factor=prefetch, persistent_workers=False,
                               timeout=DECODE_TIMEOUT_S if n else 0))

    delivered, it = 0, None
    try:
        while True:
            try:
                it = loader(workers, delivered) if it is None else it
                packed = next(it, None)
            except (OSError, RuntimeError) as err:
                if workers == 0:
                    raise
                when = "before delivering a file" if delivered == 0 else f"after {delivered} files"
                lines = str(err).strip().splitlines()  # a worker's error carries its traceback: its last line says why
                logger.warning("image-decoding workers failed %s (%s); decoding in-process", when,
                               lines[-1] if lines else type(err).__name__)
                workers, it = 0, None
                continue
            if packed is None:
                return
            delivered += len(packed[0])
            yield unpack_images(packed, slots)
    finally:  # also when an exception leaves from here (SIGTERM while the next batch is awaited)
        shut_down_workers(it)


def shut_down_workers(batches: Iterator[Any] | None) -> None:
    """The worker processes of a DataLoader's iterator stopped and joined now, their pids off the list
    that torch's SIGCHLD handler checks, rather than when the iterator is let go: a traceback holds
    it in its frames (torch's own among them) until the exception has been handled, and a SIGTERM's,
    in ``main``, after :func:`sigterm_as_interrupt` had put torch's handler back: workers dying of the
    group's SIGTERM after that were reported ("DataLoader worker (pid N) is killed by signal:
    Terminated", exit status 1). Nothing for an iterator without workers, or None."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's, which its __del__ calls; safe twice
    if shutdown is not None:
        shutdown()


def worker_slots(workers: int, prefetch: int, image_batch: int, decode_batch: int,
                 scoring: int = 1) -> DecodeSlots | None:
    """The :class:`~lrfer.io.DecodeSlots` that ``workers`` decoding workers fill (None without workers,
    or with ``DECODE_SLOT_BYTES`` 0): enough slots for every batch at once, those queued ahead
    (``prefetch`` per worker) and those held here (the ``scoring`` image batches being scored, the
    one before them until its list is let go, and the next one being gathered), each of
    ``decode_batch`` photos of up to :data:`DECODE_SLOT_BYTES` bytes: 43 slots of 32 MiB for 8
    workers, 2 batches queued per worker and image batches of 256, one scored at a time. Untouched
    slots cost no memory.
    """
    from lrfer.io import decode_slots

    if not workers or not DECODE_SLOT_BYTES:
        return None
    held = (scoring + 2) * (math.ceil(image_batch / decode_batch) + 1)
    return decode_slots(prefetch * workers + held, decode_batch * DECODE_SLOT_BYTES)


def _stderr_write_tqdm() -> type:
    """A ``tqdm`` whose ``write`` goes to stderr unless told a file: ``logging_redirect_tqdm`` of tqdm
    4.60 (before tqdm PR #1191) calls ``write(message)`` with no file: warnings went to stdout, into the table."""
    from tqdm import tqdm

    class StderrWriteTqdm(tqdm):  # type: ignore[misc]  # tqdm ships no annotations
        @classmethod
        def write(cls, s: str, file: TextIO | None = None, end: str = "\n", nolock: bool = False) -> None:
            tqdm.write(s, file=sys.stderr if file is None else file, end=end, nolock=nolock)

    return StderrWriteTqdm


def share_temp_dir_with_workers() -> None:
    """Give this process its ``multiprocessing`` temporary folder (``/tmp/pymp-*``, removed when it exits)
    before decoding workers fork, so that they use it rather than each making its own. A worker makes
    one to hand a batch's shared memory over (a socket there), and removes it as it exits; a worker
    told to stop while it was still handing over a prefetched batch (an iteration left early) made it
    after that clean-up had run, and left it in /tmp: about one folder in 15 early stops."""
    from multiprocessing.util import get_temp_dir

    get_temp_dir()


def decode_prefetch(image_batch: int, workers: int, decode_batch: int, scoring: int = 1) -> int:
    """DataLoader's ``prefetch_factor`` (batches queued per worker) that keeps about ``scoring + 1``
    image batches decoded ahead: one for each step being scored, one to start the next.

    >>> decode_prefetch(64, 4, 32), decode_prefetch(16, 1, 16), decode_prefetch(256, 8, 32)
    (1, 2, 2)
    >>> decode_prefetch(256, 8, 32, scoring=2)
    3
    """
    return max(1, math.ceil((scoring + 1) * image_batch / (workers * decode_batch)))


def regroup(batches: Iterable[list[Any]], size: int) -> Iterator[list[Any]]:
    """Consecutive ``batches`` re-cut into lists of ``size`` items, in order (the last may be shorter).

    >>> [len(b) for b in regroup([[1, 2, 3], [4, 5, 6], [7]], 2)]
    [2, 2, 2, 1]
    """
    pending: list[Any] = []
    for batch in batches:
        pending.extend(batch)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


# ----------------------------------------------------------------------------------------- writers
class open_writer:  # noqa: N801 - used like open()
    """Context manager giving ``write(row)``: CSV / JSONL to a file or to stdout (``path`` :data:`STDOUT`), or a
    stdout table (``path`` None). ``fmt`` is the format :func:`out_format` gave for ``path`` (``lrfer predict``
    works it out once, before any work); left out, it is worked out here from ``path`` alone."""

    def __init__(self, path: Path | str | None, classes: Sequence[str], video: bool = False,
                 fmt: str | None = None) -> None:
        from lrfer.results import row_columns

        self.path = path
        self.fmt = fmt
        self.columns = row_columns(classes, video=video)  # with video: image rows leave frame/time_s empty
        self.fh: TextIO | None = None

    def __enter__(self) -> Callable[[dict[str, Any]], object]:
        if self.path is None:
            return TableWriter(self.columns, sys.stdout)
        fmt = self.fmt or out_format(self.path, None)
        if self.path == STDOUT:
            # lines end in "\n" for the tools of a pipe (cut, awk); the file's CSV keeps csv's "\r\n"
            return _row_writer(fmt, self.columns, StdoutLines(), lineterminator="\n")
        path = Path(self.path)
        make_folder(path.parent, "--out")
        # A file name that is not UTF-8: CSV holds the bytes it had on disk (surrogateescape); JSONL its
        # escapes (\udcXX), which Python's json reads back as the same name (os.fsencode: the bytes)
        try:
            self.fh = open(path, "w", newline="", encoding="utf-8", errors="surrogateescape")
        except OSError as err:  # the bare "[Errno 13] Permission denied: 'x.csv'" named no option
            raise out_not_writable(path, err) from None
        return _row_writer(fmt, self.columns, self.fh)

    def __exit__(self, *exc: Any) -> None:
        if self.fh is not None:
            self.fh.close()


@overload
def out_format(out: None, fmt: str | None) -> None: ...
@overload
def out_format(out: Path | str, fmt: str | None) -> str: ...


def out_format(out: Path | str | None, fmt: str | None) -> str | None:
    """The format of ``--out`` (``csv``/``jsonl``; None: the stdout table), ``--format`` checked against
    the file's suffix; a ValueError naming the options for a pair that disagrees, a file name with
    another suffix and no ``--format``, ``--format`` without ``--out``, or an existing folder.

    >>> out_format(Path("faces.JSONL"), None), out_format("-", None), out_format("-", "jsonl")
    ('jsonl', 'csv', 'jsonl')
    """
    if out is None:
        if fmt is not None:
            raise ValueError(f"--format {fmt}: it is the format of --out; give --out - for rows on stdout, or --out FILE")
        return None
    if out == STDOUT:
        return fmt or "csv"
    if os.path.isdir(out):  # its missing suffix was told as a wrong file name (Path.is_dir raises on a name too long)
        example = Path(out) / f"faces.{fmt or OUT_FORMATS[0]}"
        raise ValueError(f"--out {str(out)!r} is a folder: name a file, e.g. --out {str(example)!r}")
    suffix = Path(out).suffix.lower()
    by_suffix = suffix[1:] if suffix[1:] in OUT_FORMATS else None
    if fmt is None:
        if by_suffix is None:
            raise ValueError(f"--out {str(out)!r}: use a .csv or .jsonl file name (or say which with --format csv|jsonl)")
        return by_suffix
    if by_suffix is not None and by_suffix != fmt:
        raise ValueError(f"--format {fmt} and --out {str(out)!r} disagree: name a .{fmt} file, or leave --format out")
    return fmt


def _row_writer(fmt: str, columns: list[str], fh: TextIO | StdoutLines,
                lineterminator: str = "\r\n") -> Callable[[dict[str, Any]], object]:
    """``write(row)`` of CSV (its header written now) or JSONL lines on ``fh``, one ``fh.write`` per line."""
    if fmt == "csv":
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator=lineterminator)
        writer.writeheader()
        return writer.writerow
    return lambda row: fh.write(json.dumps(_json_safe({c: row.get(c) for c in columns})) + "\n")


class StdoutLines:
    """``write(text)`` of ``--out -``: each line to stdout at once, for a reader at the other end of a
    pipe, as UTF-8 bytes (a file name that is not UTF-8 keeps its bytes, as in the ``--out`` file)
    where stdout has a binary buffer; a reader that closes the pipe raises BrokenPipeError (``main``
    stops quietly)."""

    def __init__(self) -> None:
        sys.stdout.flush()  # text written there before (a caller's) stays before the rows
        self.buffer: BinaryIO | None = getattr(sys.stdout, "buffer", None)

    def write(self, text: str) -> None:
        if self.buffer is None:  # stdout replaced by a text stream (a caller's io.StringIO)
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        self.buffer.write(text.encode("utf-8", "surrogateescape"))
        self.buffer.flush()


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


class TableWriter:
    """Readable fixed-width rows on a text stream, header first; numbers rounded for reading."""

    def __init__(self, columns: Sequence[str], stream: TextIO) -> None:
        self.columns = list(columns)
        self.stream = stream
        self.header_done = False

    def __call__(self, row: dict[str, Any]) -> None:
        if not self.header_done:
            self.stream.write(self._format({c: c for c in self.columns}) + "\n")
            self.header_done = True
        self.stream.write(self._format(row) + "\n")
        self.stream.flush()

    def _format(self, row: dict[str, Any]) -> str:
        cells = []
        for c in self.columns:
            v = row.get(c, "")
            if c == "file":  # a name the terminal cannot show stopped the run (Windows consoles, LANG=C)
                v = one_line(readable(str(v), getattr(self.stream, "encoding", None)))
                cells.append(f"{v:<24}" if len(v) <= 24 else "..." + v[-21:])
            elif c in ("x1", "y1", "x2", "y2", "face_px"):
                cells.append(f"{v:>7.1f}" if isinstance(v, float) else f"{v:>7}")
            elif c == "face":
                cells.append(f"{v!s:>4}")
            elif c == "label":
                cells.append(f"{v!s:<9}")
            else:
                cells.append(f"{v:>9.3f}" if isinstance(v, float) else f"{v!s:>9}")
        return " ".join(cells)


def readable(name: str, encoding: str | None = None) -> str:
    """A file name as text that ``encoding`` (a terminal's; default UTF-8) can show: bytes that were not
    UTF-8 become U+FFFD, characters the encoding lacks ``?``.

    >>> readable(b"caf\\xe9.jpg".decode("utf-8", "surrogateescape")) == "caf\\ufffd.jpg"
    True
    >>> readable("f\\xe4ce \\u65e5.jpg", "ascii"), readable("f\\xe4ce \\u65e5.jpg", "cp1252")
    ('f?ce ?.jpg', 'f\\xe4ce ?.jpg')
    """
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if encoding is None else text.encode(encoding, "replace").decode(encoding)


def one_line(text: str) -> str:
    """``text`` with its control characters (a newline or a tab in a file name) shown as ``?``: a
    newline split a table row in two, the rest of the row under the next one's file column.

    >>> one_line("new\\nline\\t.jpg")
    'new?line?.jpg'
    """
    return "".join("?" if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


# --------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lrfer`` console script; returns the exit status.

    >>> main(["models"])  # doctest: +SKIP
    """
    args_list = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO if {"-v", "--verbose"} & set(args_list) else logging.WARNING,
                        format="lrfer: %(levelname)s: %(message)s", stream=sys.stderr)
    # huggingface_hub prints its records with a handler of its own (added on import): through the
    # root handler too, every Hub warning came out twice
    logging.getLogger("huggingface_hub").propagate = False
    command = _first_command(args_list)
    if command in TRAIN_COMMANDS:
        problem = train_cli_error()
        if problem is not None:
            logger.error("`lrfer %s` needs lrfer.train.cli, which cannot be imported (%s); "
                         "install lrfer from a complete source checkout", command, problem)
            return 2
    parser = build_parser()
    args = parser.parse_args(args_list)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with sigterm_as_interrupt():
            status = args.func(args)
    except (ValueError, FileNotFoundError, KeyError, ImportError, RuntimeError) as err:
        logger.debug("details", exc_info=True)
        logger.error("%s", err.args[0] if isinstance(err, KeyError) and err.args else err)
        return 1
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        logger.warning("stopped by %s", "SIGTERM" if terminated else "Ctrl-C")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as err:  # e.g. an output file that fails while it is written (a full disk)
        logger.debug("details", exc_info=True)
        logger.error("%s", err)
        return 1
    return int(status or 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, a batch scheduler) in the command's process: the run stops
    as on Ctrl-C, its output closed on a whole row and its decoding workers shut down."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in this process while the block runs (main thread only, where
    Python handles signals). Without it the process died at once: rows still in the output's buffer were
    lost, the last one possibly cut, and decoding workers outlived it. A process forked meanwhile (a
    decoding worker) keeps the default: it is told to stop by its parent, or dies as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()
    on_child_exit: list[Any] = []  # torch's SIGCHLD handler, while it is set aside

    def stop(signum: int, frame: object) -> None:
        if os.getpid() != pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if hasattr(signal, "SIGCHLD") and not on_child_exit:
            # `timeout` and systemd signal the whole group: the decoding workers die of the same SIGTERM,
            # which torch's handler reported as an error while the run was shutting them down. A handler
            # that does nothing, not SIG_DFL: a SIGCHLD that had arrived but was not yet handled in Python
            # raised "OSError: Signal 17 ignored due to race condition" wherever the run then was.
            on_child_exit.append(signal.signal(signal.SIGCHLD, _child_exited))
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if on_child_exit and on_child_exit[0] is not None:
            signal.signal(signal.SIGCHLD, on_child_exit[0])


def _child_exited(signum: int, frame: object) -> None:
    """SIGCHLD while a SIGTERM stops the run: its decoding workers end, as they were told to."""


def _reader_went_away() -> int:
    """The reader of stdout closed it (``lrfer predict ... | head``): stop quietly, as Unix tools do,
    and keep Python from failing again when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (replaced by the caller)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
