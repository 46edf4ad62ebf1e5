"""lrfer.train refuses what it cannot use, clearly and before training: another run's checkpoint,
bad sizes, unsuitable teachers, malformed .npz and RAF-DB label files; and checkpoints survive a kill."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lrfer.constants import CLASSES
from lrfer.models import build_model
from lrfer.train.datasets import FaceSet, load_faces
from lrfer.train.recipes import Recipe, RunMismatchError, Trainer, save_trained, zoo_recipe


pytestmark = pytest.mark.usefixtures("one_thread")


def faces(n: int, seed: int) -> FaceSet:
    """48x48 faces whose brightness codes the class."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.clip(rng.integers(0, 40, (n, 48, 48)) + 28 * labels[:, None, None], 0, 255).astype(np.uint8)
    return FaceSet(images, labels, f"faces{seed}")


def tiny_recipe(**kw: object) -> Recipe:
    return replace(Recipe("baseline", {"width": 8, "input_size": 16}, 16, epochs=1, batch_size=16), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The work dir of a finished one-epoch run of :func:`tiny_recipe` on ``faces(48, 0)``."""
    work_dir = tmp_path_factory.mktemp("run")
    Trainer(tiny_recipe(), faces(48, 0), None, work_dir).fit(progress=False)
    return work_dir


# --------------------------------------------------------------------------------------- run identity
@pytest.mark.parametrize("recipe, data, differing", [
    (tiny_recipe(seed=1), faces(48, 0), "seed"),
    (tiny_recipe(batch_size=8), faces(48, 0), "batch_size"),
    (tiny_recipe(epochs=3), faces(48, 0), "epochs"),  # OneCycle's schedule was fixed for 1 epoch
    (tiny_recipe(arch="gmenet"), faces(48, 0), "arch"),  # the weights would not even load
    (tiny_recipe(), faces(48, 1), "training data"),
], ids=["seed", "batch_size", "epochs", "arch", "data"])
def test_resume_refuses_the_checkpoint_of_another_run(finished_run: Path, recipe: Recipe, data: FaceSet,
                                                      differing: str) -> None:
    trainer = Trainer(recipe, data, None, finished_run)
    with pytest.raises(RunMismatchError, match=rf"{differing}: .* in the checkpoint.*--work-dir"):
        trainer.fit(progress=False)


def test_resume_of_the_same_run_is_accepted(finished_run: Path) -> None:
    trainer = Trainer(tiny_recipe(), faces(48, 0), None, finished_run)
    trainer.fit(progress=False)
    assert [h["epoch"] for h in trainer.history] == [1]


@pytest.mark.parametrize("content, message", [
    ('{"epoch": 3', "is damaged"),
    ('{"epoch": 3}', "is not an lrfer training checkpoint"),
    ("[1, 2]", "is not an lrfer training checkpoint"),
    ('{"epoch": 3, "optimizers": {}}', r"is not an lrfer training checkpoint \(no history, recipe, schedulers, rng\)"),
], ids=["truncated", "foreign", "list", "no-run-state"])
def test_a_damaged_or_foreign_checkpoint_is_named(tmp_path: Path, content: str, message: str) -> None:
    """A truncated checkpoint.json came out as a bare JSON error, a foreign one as "ERROR: recipe"."""
    (tmp_path / "checkpoint.json").write_text(content)
    with pytest.raises(ValueError, match=rf"checkpoint\.json {message}.*--work-dir"):
        Trainer(tiny_recipe(), faces(20, 0), None, tmp_path).fit(progress=False)


@pytest.mark.parametrize("damage, message", [("missing", "is missing"), ("garbage", "cannot be read")])
def test_a_checkpoint_whose_tensors_are_missing_or_damaged_is_named(finished_run: Path, tmp_path: Path,
                                                                   damage: str, message: str) -> None:
    """A damaged tensors file came out as safetensors' bare "SafetensorError: ... header too large" traceback,
    a missing one as "No such file or directory", neither saying how to go on."""
    import shutil

    work_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    tensors = work_dir / json.loads((work_dir / "checkpoint.json").read_text())["tensors"]
    if damage == "missing":
        tensors.unlink()
    else:
        tensors.write_text("garbage")
    with pytest.raises(ValueError, match=rf"checkpoint-\w+\.safetensors, the tensors of .*checkpoint\.json, "
                                         rf"{message}.*--work-dir"):
        Trainer(tiny_recipe(), faces(48, 0), None, work_dir).fit(progress=False)


def distilled_from(teacher: Path | str) -> Recipe:
    return Recipe("gmenet", {"width": 8, "input_size": 16}, 16, "distill", epochs=1, batch_size=16, teacher=str(teacher))


def test_resume_knows_the_teacher_by_its_weights_not_its_path(tmp_path: Path, resnet_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint compared the teacher's path as written: './t.safetensors' was another run, and a
    different file at the same relative path (run from another folder) was the same run."""
    import shutil

    work_dir = tmp_path / "run"
    (tmp_path / "a").mkdir()
    shutil.copy(resnet_file, tmp_path / "a" / "teacher.safetensors")
    monkeypatch.chdir(tmp_path / "a")
    Trainer(distilled_from("teacher.safetensors"), faces(20, 0), None, work_dir).fit(progress=False)
    resumed = Trainer(distilled_from("./teacher.safetensors"), faces(20, 0), None, work_dir)
    resumed.fit(progress=False)
    assert [h["epoch"] for h in resumed.history] == [1]

    (tmp_path / "b").mkdir()
    other = build_model("resnet18", width=8).eval()
    save_trained(other, tmp_path / "b" / "teacher.safetensors", Recipe("resnet18", {"width": 8}, 48))
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(RunMismatchError, match=r"teacher's weights: 'sha256 [0-9a-f]{12}' in the checkpoint"):
        Trainer(distilled_from("teacher.safetensors"), faces(20, 0), None, work_dir).fit(progress=False)


def test_a_run_given_a_teacher_it_did_not_read_still_resumes(tmp_path: Path) -> None:
    """Earlier code accepted --teacher on a supervised recipe and recorded it; now that such a teacher
    is refused, the run must still resume without it."""
    Trainer(tiny_recipe(), faces(20, 0), None, tmp_path).fit(progress=False)
    checkpoint = tmp_path / "checkpoint.json"
    meta = json.loads(checkpoint.read_text())
    meta["recipe"]["teacher"] = "/old/teacher.safetensors"
    del meta["teacher_weights"]  # not recorded by that code
    checkpoint.write_text(json.dumps(meta))
    resumed = Trainer(tiny_recipe(), faces(20, 0), None, tmp_path)
    resumed.fit(progress=False)
    assert [h["epoch"] for h in resumed.history] == [1]


def test_recipe_differences_name_the_fields() -> None:
    recipe = zoo_recipe("gmenet-small-fer2013-16px")
    ran = json.loads(json.dumps(recipe.to_json()))
    assert recipe.differences(ran) == {}
    assert recipe.differences(dict(ran, seed=3, epochs=2)) == {"epochs": (2, 60), "seed": (3, 0)}


def test_unknown_recipe_lists_close_and_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown recipe 'gmenet-smal-fer2013-16px'; did you mean "
                                         r"gmenet-small-fer2013-16px.*known recipes: .*resnet18-fer2013-48px"):
        zoo_recipe("gmenet-smal-fer2013-16px")


def test_recipe_names_ignore_case_and_surrounding_spaces_as_model_names_do() -> None:
    """``lrfer train --recipe GMENet-Small-FER2013-16px`` was an unknown recipe whose suggestion was itself."""
    from lrfer.train.cli import _variant_name

    assert zoo_recipe(" GMENet-Small-FER2013-16px ") == zoo_recipe("gmenet-small-fer2013-16px")
    assert _variant_name(" GMENet-Small-FER2013-16px ", "gmenet", "raf", 16) == "gmenet-small-raf-16px"


# ------------------------------------------------------------------------------- checkpoint commit
class _Killed(Exception):
    pass


def test_kill_during_checkpoint_write_resumes_consistently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after epoch 2's tensors are written but before its checkpoint is complete: the resumed
    run redoes epoch 2 from epoch 1's weights and ends where an uninterrupted run ends."""
    recipe, data = tiny_recipe(epochs=2), faces(48, 0)
    full = Trainer(recipe, data, None, tmp_path / "full").fit(progress=False)

    def killed(*args: object) -> None:
        raise _Killed

    original_save = Trainer._save

    def save_killed_at_epoch_2(self: Trainer, epoch: int) -> None:
        if epoch == 2:
            monkeypatch.setattr(Path, "replace", killed)  # the rename that completes the checkpoint
        original_save(self, epoch)

    monkeypatch.setattr(Trainer, "_save", save_killed_at_epoch_2)
    with pytest.raises(_Killed):
        Trainer(recipe, data, None, tmp_path / "killed").fit(progress=False)
    monkeypatch.undo()

    resumed_trainer = Trainer(recipe, data, None, tmp_path / "killed")
    resumed = resumed_trainer.fit(progress=False)
    assert [h["epoch"] for h in resumed_trainer.history] == [1, 2]
    a, b = full.state_dict(), resumed.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)



def test_kill_while_the_tensors_are_written_leaves_the_previous_checkpoint(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the commit order of save_checkpoint: tensors first, then the JSON that names them. Killed
    half-way through writing epoch 2's tensors, the checkpoint is still epoch 1's, whole and loadable."""
    import lrfer.train.checkpoint as checkpoint

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=8)
    path = tmp_path / "checkpoint.json"
    checkpoint.save_checkpoint(path, {"model": model}, {}, {"epoch": 1})
    epoch_1 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def killed_mid_write(filename: Path, tensors: dict[str, torch.Tensor], metadata: object = None) -> None:
        Path(filename).write_bytes(b"\x00" * 10)  # a partial file
        raise _Killed

    monkeypatch.setattr(checkpoint, "write_tensors", killed_mid_write)  # save_file until checkpoints followed the umask
    with pytest.raises(_Killed):
        checkpoint.save_checkpoint(path, {"model": model}, {}, {"epoch": 2})
    monkeypatch.undo()
    fresh = build_model("baseline", width=8, input_size=8)
    assert checkpoint.load_checkpoint(path, {"model": fresh}, {})["epoch"] == 1
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, epoch_1[key]), key


def test_checkpoint_of_the_older_layout_loads_and_is_replaced(tmp_path: Path) -> None:
    """Guards checkpoints written before the JSON named its tensors file (tensors in checkpoint.safetensors):
    they load, and the next save removes that file rather than leaving it beside the new one."""
    from safetensors.torch import save_file

    from lrfer.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=8)
    path = tmp_path / "checkpoint.json"
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "checkpoint.safetensors"))
    path.write_text(json.dumps({"epoch": 4, "optimizers": {}}))
    fresh = build_model("baseline", width=8, input_size=8)
    assert load_checkpoint(path, {"model": fresh}, {})["epoch"] == 4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())
    save_checkpoint(path, {"model": fresh}, {}, {"epoch": 5})
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.json", json.loads(path.read_text())["tensors"]}


def test_checkpoints_leave_the_other_files_of_the_work_dir_alone(tmp_path: Path) -> None:
    """`lrfer train --work-dir DIR` deleted DIR's checkpoint.safetensors and checkpoint-*.safetensors files
    (a user's own weights under a common name) when it saved its first checkpoint there."""
    from lrfer.train.checkpoint import save_checkpoint

    theirs = {name: tmp_path / name for name in ("checkpoint.safetensors", "checkpoint-best.safetensors",
                                                 "checkpoint-000010.safetensors")}
    for name, file in theirs.items():
        file.write_text(name)
    model = build_model("baseline", width=8, input_size=8)
    for epoch in (1, 2):
        save_checkpoint(tmp_path / "checkpoint.json", {"model": model}, {}, {"epoch": epoch})
    assert all(file.read_text() == name for name, file in theirs.items())
    assert len({p.name for p in tmp_path.glob("checkpoint-*.safetensors")} - set(theirs)) == 1  # epoch 2's alone


def test_optimizer_state_that_is_not_a_tensor_survives_the_checkpoint(tmp_path: Path) -> None:
    """Guards the JSON half of an optimizer's state: numbers kept per parameter (an optimizer's step
    counter, say) come back as they were, beside the tensors."""
    from lrfer.train.checkpoint import load_checkpoint, save_checkpoint

    class Counting(torch.optim.SGD):
        """SGD that keeps a plain-number step count per parameter."""

        def step(self, closure=None):  # type: ignore[no-untyped-def, override]
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["count"] = self.state[p].get("count", 0) + 1
            return super().step(closure)

    model = build_model("baseline", width=8, input_size=8)
    opt = Counting(model.parameters(), 0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
    save_checkpoint(tmp_path / "checkpoint.json", {"model": model}, {"model": opt}, {"epoch": 1})
    fresh_opt = Counting(build_model("baseline", width=8, input_size=8).parameters(), 0.1, momentum=0.9)
    load_checkpoint(tmp_path / "checkpoint.json", {}, {"model": fresh_opt})
    assert [s["count"] for s in fresh_opt.state_dict()["state"].values()] == [3] * len(opt.state_dict()["state"])


# ------------------------------------------------------------------------------------ sizes, teachers
@pytest.mark.parametrize("recipe, message", [
    (tiny_recipe(batch_size=0), "batch size must be a positive whole number, got 0"),
    (tiny_recipe(epochs=0), "epochs must be a positive whole number, got 0"),
    (tiny_recipe(resolution=0, config={"width": 8, "input_size": 0}), r"resolution must be 1\.\.48 px .*got 0"),
    (tiny_recipe(resolution=64, config={"width": 8, "input_size": 64}), r"resolution must be 1\.\.48 px .*got 64"),
    (tiny_recipe(resolution=12), "config input_size 16 differs from the recipe's resolution 12"),
], ids=["batch0", "epochs0", "res0", "res64", "input_size"])
def test_trainer_refuses_bad_sizes(tmp_path: Path, recipe: Recipe, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Trainer(recipe, faces(20, 0), None, tmp_path)


def test_fewer_faces_than_a_batch_train_as_one_batch(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(batch_size=32, epochs=2), faces(10, 0), faces(7, 1), tmp_path)
    trainer.fit(progress=False)
    assert [h["epoch"] for h in trainer.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in trainer.history)


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 px baseline written like a finished run: a classifier, but not a teacher."""
    recipe = tiny_recipe()
    path = tmp_path_factory.mktemp("baseline") / "baseline.safetensors"
    save_trained(build_model("baseline", **recipe.config).eval(), path, recipe)
    return path


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-8 ResNet-18 teacher."""
    path = tmp_path_factory.mktemp("resnet") / "resnet.safetensors"
    save_trained(build_model("resnet18", width=8).eval(), path, Recipe("resnet18", {"width": 8}, 48))
    return path


@pytest.mark.parametrize("config, message", [
    ({"width": "abc"}, r"config width='abc': baseline takes a whole number \(default 32\)"),
    ({"width": 12.5}, r"config width=12.5: baseline takes a whole number"),
    ({"width": 0}, r"baseline cannot be trained with config \{.*'width': 0"),
    ({"num_classes": 5}, r"config \['num_classes'\] are set by training"),
    ({"in_chans": 3}, r"config \['in_chans'\] are set by training"),
    ({"widht": 8}, r"config key\(s\) \['widht'\] are not options of architecture 'baseline'"),
], ids=["text", "fraction", "zero", "num_classes", "in_chans", "typo"])
def test_a_config_that_cannot_train_is_refused_before_training(tmp_path: Path, config: dict, message: str) -> None:
    """Such values ended in a TypeError from inside torch, or (in_chans=3) only at the first step."""
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_recipe(config={"input_size": 16, **config}), faces(20, 0), None, tmp_path)


def test_a_teacher_for_a_recipe_that_reads_none_is_refused(tmp_path: Path, resnet_file: Path) -> None:
    """--teacher on a supervised recipe was loaded, recorded, and never used."""
    with pytest.raises(ValueError, match=r"teacher '.*resnet.safetensors' is read by distillation.*would ignore it"):
        Trainer(tiny_recipe(teacher=str(resnet_file)), faces(20, 0), None, tmp_path)


def test_trainer_refuses_a_teacher_without_resnet_stages(tmp_path: Path, baseline_file: Path) -> None:
    recipe = Recipe("gmenet", {"width": 8, "input_size": 16}, 16, "distill", epochs=1, batch_size=16,
                    teacher=str(baseline_file))
    with pytest.raises(ValueError, match=r"teacher '.*baseline.safetensors' is a GMENet; 'distill' training of "
                                         r"gmenet needs a ResNet-18 teacher"):
        Trainer(recipe, faces(20, 0), None, tmp_path)


def test_trainer_refuses_an_fsr_teacher_of_another_width(tmp_path: Path, resnet_file: Path) -> None:
    recipe = Recipe("fsrfer", {"input_size": 16, "extractor_width": 16, "hidden": 8, "growth": 8}, 16, "fsr",
                    epochs=1, batch_size=16, teacher=str(resnet_file))
    with pytest.raises(ValueError, match="has width 8 but the FSR-FER extractor width 16"):
        Trainer(recipe, faces(20, 0), None, tmp_path)


# ------------------------------------------------------------------------------------------ datasets
def write_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, images=images, labels=labels)
    return path


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((3, 48, 48), np.uint8), np.array([0, 7, 3]), r"labels \[7\] are not class indices 0\.\.6"),
    (np.zeros((3, 48, 48), np.uint8), np.array([0, -1, 3]), r"labels \[-1\] are not class indices 0\.\.6"),
    (np.zeros((3, 48, 48), np.uint8), np.array([0, 1]), r"'labels' has shape \(2,\) for 3 images"),
    (np.zeros((3, 2000), np.uint8), np.array([0, 1, 2]), "flat rows must hold square faces"),
    (np.full((3, 48, 48), 0.5, np.float32), np.array([0, 1, 2]), r"whole gray levels 0\.\.255.*\* 255"),
    (np.full((3, 48, 48), 300, np.int32), np.array([0, 1, 2]), r"whole gray levels 0\.\.255"),
    (np.zeros((0, 48, 48), np.uint8), np.zeros(0, np.int64), "no faces"),
], ids=["label7", "label-1", "count", "flat-not-square", "float01", "over255", "empty"])
def test_load_npz_refuses_malformed_arrays(tmp_path: Path, images: np.ndarray, labels: np.ndarray,
                                           message: str) -> None:
    path = write_npz(tmp_path / "mine.npz", images, labels)
    with pytest.raises(ValueError, match=rf"mine\.npz: .*{message}"):
        load_faces(path)


@pytest.mark.parametrize("layout", ["flat", "channel", "float255"])
def test_load_npz_reads_other_layouts_of_48px_faces(tmp_path: Path, layout: str) -> None:
    data = faces(5, 0)
    stored = {"flat": data.images.reshape(5, 48 * 48), "channel": data.images[..., None],
              "float255": data.images.astype(np.float64)}[layout]
    loaded = load_faces(write_npz(tmp_path / "mine.npz", stored, data.labels))
    assert loaded.images.dtype == np.uint8
    np.testing.assert_array_equal(loaded.images, data.images)
    np.testing.assert_array_equal(loaded.labels, data.labels)


def test_rafdb_label_outside_1_to_7_names_file_and_line(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "Image" / "aligned").mkdir(parents=True)
    for stem in ("train_00001", "train_00002"):
        cv2.imwrite(str(tmp_path / "Image" / "aligned" / f"{stem}_aligned.jpg"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 4\n\ntrain_00002.jpg 8\n")
    with pytest.raises(ValueError, match=r"list_patition_label\.txt, line 3: 'train_00002\.jpg 8' .* RAF-DB basic "
                                         r"label 1\.\.7 \(1 surprise"):
        load_faces(tmp_path, "train")


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "bit flip", "one array"])
def test_a_damaged_npz_is_a_value_error_naming_it(tmp_path: Path, damage: str) -> None:
    """A half-copied dataset gave a traceback (zipfile.BadZipFile) from `lrfer train` and `lrfer eval`."""
    import io
    import zipfile

    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((20, 48, 48), np.uint8), labels=np.arange(20) % 7)
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "not a zip":
        bad.write_text("x\n")
    elif damage == "bit flip":  # stored uncompressed: flip a pixel byte, so the member's CRC-32 fails
        offset = data.index(b"\x00" * 64) + 32
        bad.write_bytes(data[:offset] + b"\x01" + data[offset + 1:])
        with zipfile.ZipFile(io.BytesIO(bad.read_bytes())) as archive:
            assert archive.testzip() is not None
    else:
        np.save(bad.with_suffix(".npy"), np.zeros(3))
        bad.write_bytes(bad.with_suffix(".npy").read_bytes())
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable \.npz archive"):
        load_faces(bad)


def test_an_npz_with_an_object_array_is_refused_as_such(tmp_path: Path) -> None:
    """It was called damaged ("copy it again"): it is intact, but holds a pickled array."""
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((7, 48, 48), np.uint8), labels=np.arange(7), classes=np.array(list(CLASSES), dtype=object))
    with pytest.raises(ValueError, match=r"faces\.npz: holds an object array, which lrfer does not read"):
        load_faces(path)


@pytest.mark.parametrize("images, message", [
    (np.full((3, 48, 48), "7"), r"'images' holds <U1 values; expected numbers"),
    (np.zeros((3, 0, 0), np.uint8), r"'images' has shape \(3, 0, 0\): faces of 0 pixels"),
    (np.zeros((3, 0), np.uint8), ".*faces of 0 pixels"),
], ids=["text", "0x0", "flat-0"])
def test_npz_faces_of_text_or_no_pixels_are_a_value_error(tmp_path: Path, images: np.ndarray, message: str) -> None:
    """Text faces ended in numpy's UFuncTypeError (np.min has no loop for strings), faces of 0 pixels in
    OpenCV's resize assertion: tracebacks from `lrfer train` and `lrfer eval` instead of the file's name."""
    path = write_npz(tmp_path / "mine.npz", images, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=rf"mine\.npz: {message}"):
        load_faces(path)


@pytest.mark.parametrize("classes", [np.array(CLASSES, dtype="S"), np.array([c.title() for c in CLASSES])],
                         ids=["bytes", "title-case"])
def test_npz_class_names_stored_as_bytes_or_in_another_case_are_read(tmp_path: Path, classes: np.ndarray) -> None:
    """Names saved as bytes (dtype 'S', as h5py and Python 2 tools write them) were compared by str(b'angry'),
    "b'angry'", and 'Angry' with 'angry' (class folders' names are matched ignoring case), so the zoo's own
    class order was refused as another order."""
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((7, 48, 48), np.uint8), labels=np.arange(7), classes=classes)
    np.testing.assert_array_equal(load_faces(path).labels, np.arange(7))


def test_npz_classes_that_are_not_a_list_of_names_are_a_value_error(tmp_path: Path) -> None:
    """A single name (a 0-d array) raised TypeError: iteration over a 0-d array."""
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((7, 48, 48), np.uint8), labels=np.arange(7), classes=np.array("angry"))
    with pytest.raises(ValueError, match=r"faces\.npz: 'classes' has shape \(\); expected \(7,\) class names"):
        load_faces(path)
