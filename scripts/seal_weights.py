#!/usr/bin/env python
"""Record the content sha256 in the header of bundled weights files written before ``save_weights``
did (``lrfer.zoo.sealed``), and update their sha256 in the top-level manifest; the tensors are unchanged.

    python scripts/seal_weights.py && python scripts/sync_manifest.py

A file loaded by path is then checked against its own header, whatever its file name.
"""
from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "weights_manifest.json"

logger = logging.getLogger("seal_weights")


def main() -> int:
    sys.path.insert(0, str(REPO))
    from lrfer import zoo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = MANIFEST.read_text(encoding="utf-8")
    for spec in zoo.load_manifest(MANIFEST).models.values():
        if spec.source["kind"] != "bundled":
            continue
        path = zoo.WEIGHTS_DIR / spec.file
        blob = zoo.sealed(path.read_bytes())
        digest = hashlib.sha256(blob).hexdigest()
        if digest == spec.sha256:
            continue
        path.write_bytes(blob)
        text = text.replace(spec.sha256, digest)
        logger.info("%s: sha256 %s -> %s", spec.name, spec.sha256, digest)
    MANIFEST.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
