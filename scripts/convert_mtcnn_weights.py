"""Convert facenet-pytorch's MTCNN weights (pickled state dicts) to lrfer's safetensors files.

Run once, by a maintainer; the package itself never unpickles anything::

    pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fn
    python -c "import zipfile, glob; zipfile.ZipFile(glob.glob('/tmp/fn/*.whl')[0]).extractall('/tmp/fn/x')"
    PYTHONPATH=. python scripts/convert_mtcnn_weights.py /tmp/fn/x/facenet_pytorch/data

It writes ``lrfer/weights/mtcnn_{pnet,rnet,onet}.safetensors`` (fp32), checks that each loads into
lrfer's networks with ``strict=True``, writes ``lrfer/weights/MTCNN_LICENSE.txt`` and prints the
sha256 of each file, to paste into ``lrfer/faces/mtcnn.py`` (``WEIGHT_SHA256``).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import torch

from lrfer.faces.mtcnn import NETWORKS, WEIGHTS_DIR
from lrfer.zoo import safetensors_bytes

log = logging.getLogger("convert_mtcnn_weights")

LICENSE_TEXT = """\
MTCNN weights bundled with lrfer (mtcnn_pnet.safetensors, mtcnn_rnet.safetensors,
mtcnn_onet.safetensors)

Converted (values unchanged, stored as fp32 safetensors) from the state dicts pnet.pt, rnet.pt and
onet.pt shipped in facenet-pytorch 2.6.0 (https://github.com/timesler/facenet-pytorch), which ported
them from the original MTCNN release:

  K. Zhang, Z. Zhang, Z. Li and Y. Qiao, "Joint Face Detection and Alignment Using Multitask
  Cascaded Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016.
  https://kpzhang93.github.io/MTCNN_face_detection_alignment/

facenet-pytorch is distributed under the MIT licence:

MIT License

Copyright (c) 2019 Timothy Esler

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(source_dir: Path, out_dir: Path) -> dict[str, str]:
    """Convert ``{pnet,rnet,onet}.pt`` in ``source_dir``; return ``{name: sha256}`` of the outputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, net_cls in NETWORKS.items():
        state = torch.load(source_dir / f"{name}.pt", map_location="cpu", weights_only=True)
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
        net_cls().load_state_dict(state, strict=True)  # the layouts must match exactly
        out = out_dir / f"mtcnn_{name}.safetensors"
        Path(out).write_bytes(safetensors_bytes(state, {"source": f"facenet-pytorch 2.6.0 data/{name}.pt", "licence": "MIT"}))
        out.chmod(0o644)  # safetensors writes 0600; the file ships in the package
        hashes[name] = sha256_of(out)
        log.info("wrote %s (%d tensors) sha256=%s", out, len(state), hashes[name])
    (out_dir / "MTCNN_LICENSE.txt").write_text(LICENSE_TEXT)
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", type=Path, help="folder holding facenet-pytorch's pnet.pt, rnet.pt, onet.pt")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hashes = convert(args.source_dir, args.out_dir)
    print("WEIGHT_SHA256 = {")
    for name, digest in hashes.items():
        print(f'    "{name}": "{digest}",')
    print("}")


if __name__ == "__main__":
    main()
