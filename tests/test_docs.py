"""The README's figures and pointers agree with the tables they quote (the tables are replaced with
each stop's run; sentences quoting them were left with the previous run's numbers)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
#: The README with its line breaks and indents as single spaces, for sentences that wrap.
FLAT = " ".join(README.split())


def section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n#", start + len(heading))
    return README[start:end if end >= 0 else len(README)]


def crops_table_batch_1024() -> dict[str, str]:
    """Model name (without " (default)") -> the batch 1024 cell of the crops table."""
    rows = {}
    for line in section("### Classification of crops").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and (cells[0].endswith("px") or cells[0].endswith("(default)")):
            rows[cells[0].removesuffix(" (default)")] = cells[4]
    return rows


def caption_stop(heading: str) -> int:
    """The stop whose run a table's caption names ("..., stop 39, ...")."""
    found = re.search(r"\bstop (\d+)\b", section(heading))
    assert found, heading
    return int(found.group(1))


def target_row(start: str) -> str:
    return next(line for line in README.splitlines() if line.startswith(start))


def test_the_sentence_comparing_the_baseline_quotes_the_crops_table() -> None:
    table = crops_table_batch_1024()
    assert {"baseline-fer2013-16px", "gmenet-fer2013-16px"} <= table.keys(), table
    quoted = re.search(r"\(([\d,]+) against ([\d,]+) faces/s in the \[Speed\]\(#speed\) table\)", README)
    assert quoted, "the baseline's speed sentence"
    assert quoted.groups() == (table["baseline-fer2013-16px"], table["gmenet-fer2013-16px"])


def test_the_table_below_is_named_only_with_the_stop_of_that_table() -> None:
    for row_start, heading in (("| CPU, 2 cores: >= 5,000", "### Classification of crops"),
                               ("| CPU: a 1920 px photo", "### End to end on the shared photos")):
        row, stop = target_row(row_start), caption_stop(heading)
        for pointer in re.finditer(r"the table below", row):
            named = re.findall(r"\b[Ss]tops? (\d+)\b", row[:pointer.start()])
            assert named and int(named[-1]) == stop, (row_start, named[-1:], stop)


def test_lrfer_train_help_and_the_readme_give_the_default_work_dir() -> None:
    """Both said ``<out>.run/``: for ``x.safetensors`` the directory is ``x.run``, not ``x.safetensors.run``."""
    from lrfer.cli import build_parser
    from lrfer.train.cli import default_work_dir

    assert default_work_dir(Path("models/x.safetensors")) == Path("models/x.run")
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
                 if any("--work-dir" in o.option_strings for o in a._actions))
    help_text = " ".join(train.format_help().split())
    assert "models/x.run/ for models/x.safetensors" in help_text
    assert "`models/x.run/` for `models/x.safetensors`" in README


# ------------------------------------------------------------------------------------------------
# Claims of the README checked against the code, the manifest and the documents it quotes.

ROOT = Path(__file__).resolve().parents[1]


def table_rows(text: str, cells: int) -> list[list[str]]:
    """The rows of the markdown tables in ``text`` with ``cells`` cells, header and rule left out."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            row = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(row) == cells:
                rows.append(row)
    return rows[1:] if rows and rows[0][0] in ("name", "model") else rows


def manifest_models() -> dict[str, dict[str, object]]:
    import json

    models = json.loads((ROOT / "weights_manifest.json").read_text(encoding="utf-8"))["models"]
    return {m["name"]: m for m in models} if isinstance(models, list) else dict(models)


def first_table(text: str) -> list[list[str]]:
    start = text.index("\n|")
    end = text.find("\n\n", start + 1)
    return table_rows(text[start:end if end >= 0 else len(text)], 6)


def test_the_model_table_gives_each_manifest_entry_its_metrics_size_and_source() -> None:
    """The model table is filled from weights_manifest.json by hand: a re-exported file or a new entry
    left it quoting the previous metrics or sizes."""
    models = manifest_models()
    table = README[README.index("<!-- model table"):README.index("These metrics were measured")]
    rows = {row[0].split("`")[1]: row[1:] for row in table_rows(table, 8)}
    assert rows.keys() == models.keys()
    for name, entry in models.items():
        metrics = entry["metrics"]
        assert isinstance(metrics, dict)
        size = (ROOT / "lrfer" / "weights" / str(entry["file"])).stat().st_size
        expected = [str(entry["arch"]), str(entry["resolution"]), f"{100 * metrics['publictest_accuracy']:.1f} %",
                    f"{100 * metrics['publictest_macro_f1']:.1f}", f"{100 * metrics['publictest_ece']:.1f} %",
                    f"{size / 1e6:.1f} MB", entry["source"]["kind"]]  # type: ignore[index]
        assert rows[name] == expected, name


def test_the_accuracy_table_is_lrfer_evals_and_agrees_with_the_manifests_accuracy_by_px() -> None:
    """The README's accuracy table is docs/eval_publictest.md's first table, and the manifest's
    ``publictest_accuracy_by_px`` was measured the same way (``lrfer eval`` flips up to 2 faces: 0.06 points)."""
    readme = first_table(section("## Accuracy per resolution"))
    assert readme == first_table((ROOT / "docs" / "eval_publictest.md").read_text(encoding="utf-8"))
    models = manifest_models()
    assert {row[0] for row in readme} == models.keys()
    for name, *cells in readme:
        by_px = models[name]["metrics"]["publictest_accuracy_by_px"]  # type: ignore[index]
        for px, cell in zip(("8", "12", "16", "24", "48"), cells):
            assert abs(float(cell) - 100 * by_px[px]) <= 0.1, (name, px, cell, by_px[px])


def eval_details(path: Path) -> dict[str, dict[str, list[str]]]:
    """Model -> px -> (accuracy, macro-F1, ECE) of ``lrfer eval --details``'s per-model tables."""
    details: dict[str, dict[str, list[str]]] = {}
    model = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.fullmatch(r"[a-z0-9-]+px", line.strip()):
            model = line.strip()
            details[model] = {}
        elif model and re.match(r"\| \d", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            details[model][cells[0]] = cells[1:4]
    return details


def test_the_tta_table_quotes_both_eval_documents_at_each_models_native_size() -> None:
    """The ``a -> b`` cells of the tta table are copied from docs/eval_publictest.md and
    docs/eval_publictest_tta.md; regenerating either left the table behind."""
    plain = eval_details(ROOT / "docs" / "eval_publictest.md")
    tta = eval_details(ROOT / "docs" / "eval_publictest_tta.md")
    models = manifest_models()
    rows = table_rows(section("### With mirror-image test-time augmentation"), 4)
    assert {row[0].split("`")[1] for row in rows} == models.keys()
    for name_cell, *cells in rows:
        name = name_cell.split("`")[1]
        px = str(models[name]["resolution"])
        quoted = [tuple(re.findall(r"[\d.]+", cell)) for cell in cells]
        assert quoted == list(zip(plain[name][px], tta[name][px])), name


def test_the_in_sample_ece_column_is_lrfer_evals() -> None:
    """The cross-fitted table's in-sample column is said to be ``lrfer eval``'s with the loaded files."""
    plain = eval_details(ROOT / "docs" / "eval_publictest.md")
    models = manifest_models()
    rows = table_rows(README[README.index("| model | ECE in-sample"):README.index("Part of the gap")], 3)
    assert {row[0].split("`")[1] for row in rows} == models.keys()
    for name_cell, in_sample, _ in rows:
        name = name_cell.split("`")[1]
        assert in_sample == f"{plain[name][str(models[name]['resolution'])][2]} %", name


def subcommand_options() -> dict[str, set[str]]:
    from lrfer.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return {name: {o for a in parser._actions for o in a.option_strings} for name, parser in choices.items()}


def test_every_option_given_to_an_lrfer_command_in_the_readme_is_one_of_its_options() -> None:
    """The README's commands are run as written by new users: a renamed option made them fail."""
    options = subcommand_options()
    commands = re.findall(r"(?:^|[`\s(])lrfer (models|info|download|predict|train|eval)\b([^`\n]*)", README, re.M)
    assert len(commands) > 20
    for command, args in commands:
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", args.split("#")[0]):
            assert option in options[command], (command, option)


def test_the_predict_options_paragraph_names_every_option_of_lrfer_predict() -> None:
    """The ``predict`` options paragraph lists the command's options; a new option went unmentioned."""
    start = README.index("`predict` options:")
    listed = set(re.findall(r"--[a-z][a-z0-9-]*", README[start:README.index("\n", start + 600)]))
    assert listed <= subcommand_options()["predict"]
    command_line = section("## Command line")
    missing = {o for o in subcommand_options()["predict"] - {"-h", "--help"} if o not in command_line}
    assert not missing


def test_lrfer_predict_usage_names_each_options_value_as_the_options_paragraph_does() -> None:
    """The paragraph gives ``--batch-size N``, ``--image-batch N`` and ``--workers N``; ``lrfer predict
    --help`` showed ``BATCH_SIZE``, ``IMAGE_BATCH`` and ``WORKERS``, as if they were other options."""
    from lrfer.cli import build_parser

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]  # type: ignore[union-attr]
    usage = " ".join(predict.format_usage().split())
    start = README.index("`predict` options:")
    paragraph = README[start:README.index("\n", start + 600)]
    for option, value in re.findall(r"`(--[a-z][a-z0-9-]*) ([A-Z]+)\b", paragraph):
        assert f"[{option} {value}]" in usage, (option, value, usage)


def script_commands() -> list[tuple[str, str]]:
    return re.findall(r"python ((?:benchmarks|scripts)/\w+\.py)([^`\n;]*)", README)


def test_every_option_given_to_a_script_in_the_readme_is_one_it_takes() -> None:
    """``python benchmarks/...`` and ``python scripts/...`` commands quoted as the source of figures
    must still run: their options are read from the script's ``add_argument`` calls."""
    commands = script_commands()
    assert len(commands) > 10
    for script, args in commands:
        source = (ROOT / script).read_text(encoding="utf-8")
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", args.split("#")[0]):
            assert f'"{option}"' in source, (script, option)


def test_every_file_and_anchor_the_readme_links_to_exists() -> None:
    """Links into docs/ name headings by their GitHub anchors: a renamed heading broke them silently."""
    def anchors(path: Path) -> set[str]:
        headings = re.findall(r"^#+ (.*)$", path.read_text(encoding="utf-8"), re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}

    links = re.findall(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)", README)
    assert len(links) > 20
    for target, anchor in links:
        path = ROOT / target if target else ROOT / "README.md"
        assert path.exists(), target
        if anchor:
            assert anchor in anchors(path), (target, anchor)


def test_every_repository_path_the_readme_names_exists() -> None:
    names = set(re.findall(r"\b(?:lrfer|scripts|benchmarks|docs|examples|tests)/[\w./-]+\.(?:py|md|png|txt|sh|jpg)\b",
                           README))
    assert len(names) > 20
    assert [n for n in names if not (ROOT / n).exists()] == []


def test_the_video_suffixes_the_readme_lists_are_those_lrfer_predict_finds() -> None:
    from lrfer.video import VIDEO_EXTENSIONS

    start = README.index("Video files (`lrfer predict lecture.mp4")
    listed = set(re.findall(r"`(\.\w+)`", README[start:README.index("are scored", start)]))
    assert listed == set(VIDEO_EXTENSIONS)


def test_the_image_suffixes_the_readme_lists_are_those_a_folder_search_finds() -> None:
    """The README named no image suffixes, and the search left out ``.jfif`` and ``.jpe`` JPEGs."""
    from lrfer.io import IMAGE_EXTENSIONS

    start = FLAT.index("Folders are searched recursively for images (")
    listed = set(re.findall(r"`(\.\w+)`", FLAT[start:FLAT.index(")", start)]))
    assert listed == set(IMAGE_EXTENSIONS)


def test_the_face_table_and_the_row_columns_are_the_results() -> None:
    """The README lists Face's fields and the rows' columns (``lrfer predict``, ``to_row``)."""
    import dataclasses

    from lrfer.results import ROW_PREFIX, Face

    fields = re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", section("Each `Face` is a frozen dataclass"), re.M)
    assert [name for pair in fields for name in pair if name] == [f.name for f in dataclasses.fields(Face)]
    assert "`file`, `face` (index in the image), `x1 y1 x2 y2`, `face_px`, `det_score`, `label`" in FLAT
    assert ROW_PREFIX == ("file", "face", "x1", "y1", "x2", "y2", "face_px", "det_score", "label")


def test_the_alignment_figures_are_the_template_and_box_of_the_code() -> None:
    """The README quotes FER2013_TEMPLATE's eye, nose and mouth positions and FER2013_FACE_BOX."""
    from lrfer.faces.align import FER2013_FACE_BOX, FER2013_TEMPLATE

    (lx, ly), (rx, ry), (nx, ny), (_, ml), (_, mr) = FER2013_TEMPLATE.tolist()
    assert f"eyes at y = {min(ly, ry):.1f}-{max(ly, ry):.1f}, {rx - lx:.1f} px apart" in FLAT
    assert f"nose at ({nx:.1f}, {ny:.1f})" in FLAT
    assert f"mouth corners at y = {min(ml, mr) + 1e-6:.1f}-{max(ml, mr):.1f}" in FLAT  # 37.25 reads 37.3
    box = ", ".join(f"{v:.2f}" for v in FER2013_FACE_BOX.tolist())
    assert f"`({box})`" in README


def test_the_errors_the_readme_names_subclass_the_built_in_kinds_it_names() -> None:
    import lrfer

    kinds = {"UnknownModelError": ValueError, "DatasetUnavailableError": lrfer.UnknownModelError,
             "ChecksumError": ValueError, "ManifestError": ValueError, "UnsupportedFormatError": ValueError,
             "StateDictMismatchError": RuntimeError, "NotCachedError": FileNotFoundError,
             "HubDownloadError": ConnectionError}
    for name, kind in kinds.items():
        assert f"`{name}`" in README
        assert issubclass(getattr(lrfer, name), kind), name


def test_lrfer_predict_help_and_the_readme_give_the_cpu_default_of_streams() -> None:
    """``--streams``'s help said "2 on CPU with 2 cores or more" only: with ``OMP_NUM_THREADS`` set (or
    ``MKL_NUM_THREADS``, ``TORCH_NUM_THREADS``) the default is 1, as the README says."""
    from lrfer.cli import build_parser

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]  # type: ignore[union-attr]
    help_text = " ".join(predict.format_help().split())
    assert "2 on CPU with 2 cores or more, else 1, and 1 where OMP_NUM_THREADS or the like is set" in help_text
    assert "2 on CPU with 2 cores or more, else 1, and 1 on CUDA" in FLAT
    assert "on one core, or with `OMP_NUM_THREADS` (or `MKL_NUM_THREADS`, `TORCH_NUM_THREADS`) set, 1." in FLAT


def test_lrfer_predict_help_gives_the_readmes_bound_on_bf16_probabilities() -> None:
    """``--precision``'s help said bf16's probabilities were "within about 2e-2 of fp32"; the README's
    measurement on FER2013 PublicTest is "at most 0.026", past that bound."""
    from lrfer.cli import build_parser

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]  # type: ignore[union-attr]
    help_text = " ".join(predict.format_help().split())
    readme = re.search(r"probabilities moved by at most ([\d.]+) and", FLAT)
    assert readme, "the README's bf16 sentence"
    assert f"probabilities within {readme.group(1)} of fp32" in help_text, help_text


def test_lrfer_predict_help_gives_the_readmes_range_of_tta_gains() -> None:
    """``--tta``'s help said "0.06-1.2 points more accuracy" after ``gmenet-nano`` (+1.5) joined the zoo;
    the README's tta sentence says "by 0.06 to 1.5 points"."""
    from lrfer.cli import build_parser

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]  # type: ignore[union-attr]
    help_text = " ".join(predict.format_help().split())
    readme = re.search(r"accuracy at its native size by ([\d.]+) to ([\d.]+) points", FLAT)
    assert readme, "the README's tta sentence"
    assert f"{readme.group(1)}-{readme.group(2)} points more accuracy" in help_text, help_text


def test_the_figures_the_readme_gives_for_the_codes_constants_are_theirs() -> None:
    """Sizes and thresholds the README states as facts of the code, each beside the constant that
    decides it: a constant changed without its sentence left the README describing the old behaviour."""
    from lrfer import allocator, cli, io, recognizer, shapes, video
    from lrfer.faces import align, blazeface, detect, mtcnn, workspace

    mib = 1 << 20
    claims = {
        f"{io.MAX_IMAGE_PIXELS:,} as in Pillow": io.MAX_IMAGE_PIXELS == 178_956_970,
        "in steps of up to 32 images on CPU (256 on CUDA)":
            (recognizer.IMAGES_PER_STEP, recognizer.GPU_IMAGES_PER_STEP) == (32, 256),
        "on CUDA up to 256 and 64 M pixels": recognizer.GPU_STEP_PIXELS == 64 * mib,
        "(at most 256 MiB of them)": recognizer.READ_AHEAD_BYTES == 256 * mib,
        "allocates and frees one 31 MiB block": allocator.ADAPTIVE_BLOCK_BYTES == 31 * mib,
        "sets options for the whole process (256 MiB and 1 GiB)":
            (allocator.MMAP_THRESHOLD, allocator.TRIM_THRESHOLD) == (256 * mib, 1024 * mib),
        "that the thread's next photo reuses, up to 64 MiB each": workspace.MAX_REUSED_BYTES == 64 * mib,
        "(images detected together; 16 on CPU, 64 on CUDA)":
            (cli.DEFAULT_IMAGE_BATCH, cli.DEFAULT_GPU_IMAGE_BATCH) == (16, 64),
        "Each worker decodes up to 32 files at a time": cli.DECODE_BATCH == 32,
        "no batch for 10 minutes": cli.DECODE_TIMEOUT_S == 600,
        "a batch whose photos average over 1 MiB": cli.DECODE_SLOT_BYTES == mib,
        "batches are padded to 2 sizes per octave": shapes.BATCH_STEPS == 2,
        "at least to 64 photos (BlazeFace), 512 crops (R-Net, O-Net) and 256 faces (the expression model)":
            (shapes.PHOTO_ROWS, mtcnn.NET_CHUNK, shapes.MIN_FACE_ROWS) == (64, 512, 256),
        "on a canvas padded to 8 sizes per octave": shapes.SIDE_STEPS == 8,
        "sees the whole photo through a 192 px letterbox": blazeface.INPUT_SIZE == 192,
        "a second look zoomed out to half the frame, keeping faces of at least 1/3 of the long side":
            (blazeface.ZOOM_OUT_FILL, blazeface.ZOOM_OUT_MIN_FRACTION) == (0.5, 1 / 3),
        "up to 1/20 of the long side (its image pyramid stops there)": detect.SMALL_FACE_FRACTION == 1 / 20,
        "at least 0.95, is not one of BlazeFace's and is narrower than 1/10 of the long side":
            (detect.SMALL_FACE_MIN_SCORE, detect.SMALL_FACE_MERGE_FRACTION) == (0.95, 1 / 10),
        "just above O-Net's 0.7 threshold": mtcnn.DEFAULT_THRESHOLDS[2] == 0.7,
        "(`min_face` below 12, P-Net's window)": mtcnn.PNET_WINDOW == 12,
        "`min_face` (default 20, at least 8: the zoo's smallest faces)":
            (mtcnn.DEFAULT_MIN_FACE, detect.MIN_FACE_PX) == (20, 8),
        "(one sampling call per distinct factor, at most 8)": align.MAX_OVERSAMPLE == 8,
        "in photos of 65,536 pixels or more": align.GRAY_FOOTPRINT_MIN_PIXELS == 65_536,
        "(the nearest rate MPEG-4 encodes: whole rates above 65 fps, at least 0.01 fps)":
            (video.MAX_FRACTIONAL_FPS, video.MIN_WRITTEN_FPS) == (65.0, 0.01),
    }
    assert [claim for claim in claims if claim not in FLAT] == []
    assert [claim for claim, true in claims.items() if not true] == []


def test_the_fields_the_readme_lists_for_lrfer_config_json_are_those_lrfer_info_config_prints() -> None:
    """Step 2 of "Adding weights to the Hub" lists the fields of ``lrfer info FILE --config``."""
    from lrfer.zoo import config_entry

    start = FLAT.index("`lrfer info mymodel.safetensors --config > lrfer_config.json` (the manifest entry:")
    listed = re.findall(r"`(\w+)`", FLAT[start:FLAT.index("...;", start)])
    entry = config_entry("gmenet-fer2013-16px")
    assert "source" not in entry
    assert len(listed) > 10 and [name for name in listed if name not in entry] == []
    assert entry["in_chans"] == 1


def test_every_lrfer_module_name_the_readme_gives_resolves_after_a_bare_import() -> None:
    """``lrfer.allocator.trim_if_grown``, named in the README, raised ``AttributeError: module 'lrfer' has
    no attribute 'allocator'`` after ``import lrfer`` alone (the other modules it names load on first use)."""
    import subprocess
    import sys

    names = sorted(set(re.findall(r"\blrfer\.[a-z_]+\.[A-Za-z_][\w.]*[A-Za-z_]", README)))
    assert "lrfer.allocator.trim_if_grown" in names
    code = "import functools, lrfer\nfor n in %r:\n    functools.reduce(getattr, n.split('.')[1:], lrfer)" % names
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_the_stages_on_their_own_run_as_written_and_give_predicts_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A facenet-pytorch user looked for ``MTCNN.detect`` and found no public detection step documented:
    the README's snippet of each stage alone runs as written and gives ``predict``'s boxes and probabilities."""
    import numpy as np

    import lrfer

    start = README.index("### Each stage on its own")
    code = re.search(r"```python\n(.*?)```", README[start:], re.S)
    assert code is not None
    monkeypatch.chdir(ROOT)
    names: dict[str, object] = {}
    exec(code.group(1), names)  # noqa: S102 - the README's own example
    rec = lrfer.load(device="cpu")
    faces = rec.predict("examples/group1.jpg")
    boxes, points, probs = names["boxes"], names["points"], names["probs"]
    assert isinstance(boxes, np.ndarray) and isinstance(points, np.ndarray) and isinstance(probs, np.ndarray)
    assert boxes.shape == (len(faces), 4) and points.shape == (len(faces), 5, 2) and len(faces) == 3
    np.testing.assert_allclose(boxes, [f.box for f in faces], atol=1e-3)
    np.testing.assert_allclose(probs, [[f.probs[c] for c in rec.classes] for f in faces], atol=1e-5)
