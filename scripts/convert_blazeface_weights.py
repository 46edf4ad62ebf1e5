"""Convert MediaPipe's full-range BlazeFace (TFLite) to lrfer's safetensors file.

Run once, by a maintainer, in a scratch environment (the package itself never reads TFLite)::

    python -m venv /tmp/bfenv && . /tmp/bfenv/bin/activate
    pip install torch==2.13.0 safetensors numpy tflite ai-edge-litert
    pip download mediapipe==0.10.14 --no-deps -d /tmp/mp
    python -c "import zipfile, glob; zipfile.ZipFile(glob.glob('/tmp/mp/*.whl')[0]).extractall('/tmp/mp/x')"
    PYTHONPATH=. python scripts/convert_blazeface_weights.py \
        /tmp/mp/x/mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite

The model's weights are fp16, some stored block-sparse (TFLite ``DENSIFY``): rather than decoding
those formats, the TFLite interpreter runs once with all tensors preserved and every convolution's
dense float weights are read from it. They are mapped, in graph order, onto the ``nn.Conv2d``
modules of :class:`lrfer.faces.blazeface.BlazeFaceFullRange` (shapes are checked), stored as fp16
(the source precision), and the torch network is checked against the interpreter on random and
constant inputs. Writes ``lrfer/weights/blazeface_full_range.safetensors`` and
``BLAZEFACE_LICENSE.txt`` and prints the sha256 to paste into ``lrfer/faces/blazeface.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrfer.faces.blazeface import WEIGHTS_FILE, BlazeFaceFullRange
from lrfer.zoo import safetensors_bytes

log = logging.getLogger("convert_blazeface_weights")

LICENSE_TEXT = """\
BlazeFace weights bundled with lrfer (blazeface_full_range.safetensors)

Converted (fp16 values unchanged; sparse tensors densified) from
mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite in the mediapipe 0.10.14
wheel on PyPI (https://github.com/google-ai-edge/mediapipe), by scripts/convert_blazeface_weights.py.

  V. Bazarevsky, Y. Kartynnik, A. Vakunov, K. Raveendran and M. Grundmann, "BlazeFace: Sub-millisecond
  Neural Face Detection on Mobile GPUs", CVPR Workshop on Computer Vision for AR/VR, 2019.
  Model card: https://mediapipe.page.link/blazeface-mc (full-range model: "MediaPipe BlazeFace
  Full-Range").

MediaPipe and its models are distributed under the Apache License, Version 2.0:

  Copyright 2019-2024 The MediaPipe Authors.

  Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
  compliance with the License. You may obtain a copy of the License at

      http://www.apache.org/licenses/LICENSE-2.0

  Unless required by applicable law or agreed to in writing, software distributed under the License
  is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
  implied. See the License for the specific language governing permissions and limitations under the
  License.
"""

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def tflite_convolutions(model_path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(op name, weight, bias)`` of every convolution, in graph order, as dense float32 arrays."""
    import tflite
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = tflite.Model.GetRootAsModel(model_path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    # No XNNPACK delegate: delegated subgraphs never fill the intermediate (dense weight) tensors.
    interpreter = Interpreter(
        model_path=str(model_path),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, 192, 192, 3), np.float32))
    interpreter.invoke()
    convs = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name in CONV_OPS:
            convs.append((name, interpreter.get_tensor(op.Inputs(1)), interpreter.get_tensor(op.Inputs(2))))
    return convs


def to_state_dict(convs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Map TFLite weights (NHWC layouts) onto the network's convolutions, in declaration order."""
    net = BlazeFaceFullRange()
    modules = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if len(modules) != len(convs):
        raise ValueError(f"the network has {len(modules)} convolutions, the TFLite graph {len(convs)}")
    state = {}
    for (name, module), (op, weight, bias) in zip(modules, convs):
        # CONV_2D weights are (out, kh, kw, in); DEPTHWISE_CONV_2D (1, kh, kw, channels).
        w = torch.from_numpy(weight).permute(0, 3, 1, 2) if op == "CONV_2D" else torch.from_numpy(weight).permute(3, 0, 1, 2)
        if w.shape != module.weight.shape or (module.groups > 1) != (op == "DEPTHWISE_CONV_2D"):
            raise ValueError(f"{name}: TFLite {op} {tuple(w.shape)} does not fit {module}")
        state[f"{name}.weight"] = w.contiguous()
        state[f"{name}.bias"] = torch.from_numpy(bias).contiguous()
    net.load_state_dict(state, strict=True)
    return state


def check_against_tflite(model_path: Path, state: dict[str, torch.Tensor]) -> float:
    """Largest |torch - TFLite| over both outputs, on random and constant inputs."""
    from ai_edge_litert.interpreter import Interpreter

    net = BlazeFaceFullRange().eval()
    net.load_state_dict(state)
    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    worst = 0.0
    for x in (rng.uniform(-1, 1, (1, 192, 192, 3)), np.full((1, 192, 192, 3), -0.3)):
        x = x.astype(np.float32)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        outs = {tuple(d["shape"]): interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
        with torch.no_grad():
            logits, regression = net(torch.from_numpy(x).permute(0, 3, 1, 2))
        worst = max(
            worst,
            float(np.abs(outs[(1, 2304, 1)][..., 0] - logits.numpy()).max()),
            float(np.abs(outs[(1, 2304, 16)] - regression.numpy()).max()),
        )
    return worst


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tflite", type=Path, help="face_detection_full_range_sparse.tflite")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args()
    state = to_state_dict(tflite_convolutions(args.tflite))
    error = check_against_tflite(args.tflite, state)
    log.info("largest |torch - TFLite| output difference: %.2e", error)
    if error > 1e-3:
        raise SystemExit("the torch network does not reproduce the TFLite model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fp16 = {k: v.to(torch.float16) for k, v in state.items()}
    if any(not torch.equal(fp16[k].float(), v) for k, v in state.items()):
        raise SystemExit("the TFLite weights are not exactly fp16; store them as fp32 instead")
    Path(args.out).write_bytes(safetensors_bytes(fp16, {"source": f"mediapipe 0.10.14 {args.tflite.name}", "licence": "Apache-2.0"}))
    args.out.chmod(0o644)
    (args.out.parent / "BLAZEFACE_LICENSE.txt").write_text(LICENSE_TEXT)
    log.info("wrote %s (%d tensors), sha256 %s", args.out, len(fp16), hashlib.sha256(args.out.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
