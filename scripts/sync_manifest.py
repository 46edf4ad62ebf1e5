#!/usr/bin/env python
"""Validate the top-level ``weights_manifest.json`` and copy it to ``lrfer/weights_manifest.json``.

The repo's top-level manifest is the file people edit; the package reads its own byte-identical
copy. Run this after every edit (a test fails while the two differ)::

    python scripts/sync_manifest.py           # validate, then copy
    python scripts/sync_manifest.py --check   # exit 1 if the copies differ (CI)

Bundled entries are also checked: ``lrfer/weights/<file>`` must exist with the recorded sha256.
"""
from __future__ import annotations

import argparse
import filecmp
import logging
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "weights_manifest.json"
TARGET = REPO / "lrfer" / "weights_manifest.json"

logger = logging.getLogger("sync_manifest")


def validate(path: Path) -> int:
    """Parse ``path`` with lrfer's own schema and check bundled files; return the number of models."""
    sys.path.insert(0, str(REPO))
    from lrfer import zoo

    try:
        manifest = zoo.load_manifest(path)
    except zoo.ManifestError as err:
        raise SystemExit(f"{path}: {err}") from None
    for spec in manifest.models.values():
        if spec.source["kind"] == "bundled":
            weights = zoo.WEIGHTS_DIR / spec.file
            if not weights.is_file():
                raise SystemExit(f"{spec.name}: bundled file {weights} is missing")
            actual = zoo.sha256_file(weights)
            if actual != spec.sha256:
                raise SystemExit(f"{spec.name}: {weights} has sha256 {actual}, manifest says {spec.sha256}")
    return len(manifest.models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the copies differ")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        same = TARGET.is_file() and filecmp.cmp(SOURCE, TARGET, shallow=False)
        logger.info("%s and %s %s", SOURCE.name, TARGET.relative_to(REPO), "match" if same else "DIFFER: run "
                    "python scripts/sync_manifest.py")
        return 0 if same else 1
    count = validate(SOURCE)
    shutil.copyfile(SOURCE, TARGET)
    logger.info("validated %d model(s); copied %s -> %s", count, SOURCE.relative_to(REPO), TARGET.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
