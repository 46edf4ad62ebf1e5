"""The README's figures and pointers agree with the tables they quote (the tables are replaced with
each stop's run; sentences quoting them were left with the previous run's numbers)."""
from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


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
