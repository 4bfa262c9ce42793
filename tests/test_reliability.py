"""Every user mistake of issue 22 ends in one `yololab: error:` line (exit 2) or a printed note, run through the CLI;
internal errors keep their traceback (exit 1); one writer per run folder, also for two processes started together."""

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import yaml

from tiny_training import TINY_MODEL, tiny_dataset, tiny_settings
from yololab import cli
from yololab.checkpoint import save_checkpoint
from yololab.cli import Command, main
from yololab.engine.trainer import Trainer
from yololab.nn import DetectionModel
from yololab.utils.files import RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TRAIN = ["imgsz=64", "batch=4", "workers=0", "device=cpu", "plots=false", "mosaic=0", "close_mosaic=0",
              "warmup_epochs=1", "nbs=8", "verbose=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data.yaml, model yaml) of the tiny synthetic set and detector."""
    root = tmp_path_factory.mktemp("reliability")
    model = root / "tiny.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    return tiny_dataset(root / "data"), model


def user_error(argv: list[str], capsys) -> str:
    """Run ``yololab argv``; it must end with exit code 2 and one error line, no traceback. Returns that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("yololab: error: ")
    return last


def test_an_internal_error_keeps_its_traceback_and_asks_for_a_bug_report(monkeypatch, capsys):
    def broken(s):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "modules", Command("modules", broken, "broken"))
    assert main(["modules"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "please report it" in err


@pytest.mark.parametrize("value, expected", [
    ("epochs=0", "epochs=0 is out of range"), ("epochs=1.5", "epochs=1.5"), ("epochs=abc", "epochs='abc'"),
    ("batch=0", "batch=0"), ("imgsz=-1", "imgsz=-1"), ("lr0=-0.1", "lr0=-0.1"),
])
def test_wrong_values_are_refused_naming_the_key(tiny, tmp_path, capsys, value, expected):
    data, model = tiny
    line = user_error(["train", f"model={model}", f"data={data}", f"project={tmp_path}", value], capsys)
    assert expected in line
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_an_empty_checkpoint_is_named(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty.pt is empty (0 bytes)" in user_error(["info", f"model={tmp_path / 'empty.pt'}"], capsys)


def test_a_checkpoint_with_another_architectures_tensors_is_named(tmp_path, capsys):
    other = {**TINY_MODEL, "backbone": [[-1, 1, "Conv", [24, 3, 2]], *TINY_MODEL["backbone"][1:]]}
    file = tmp_path / "mixed.pt"
    save_checkpoint(file, DetectionModel(other).state_dict(), {"model_yaml": TINY_MODEL, "names": {}})
    line = user_error(["info", f"model={file}"], capsys)
    assert "mixed.pt do not fit the model" in line and "size mismatch" in line


def test_broken_yaml_and_onnx_files_are_named_in_one_line(tiny, tmp_path, capsys):
    data, _ = tiny
    (tmp_path / "bad.yaml").write_text("names: [a,\n")
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf")
    for argv, expected in ((["check-data", f"data={tmp_path / 'bad.yaml'}"], "bad.yaml: not valid YAML (line 2"),
                           (["info", f"model={tmp_path / 'bad.yaml'}"], "bad.yaml: invalid YAML: line 2"),
                           (["predict", f"model={tmp_path / 'bad.onnx'}", f"source={data.parent / 'images' / 'val'}",
                             "save=false"], "bad.onnx: not a loadable ONNX model")):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and expected in err, err


def test_predict_on_a_zero_byte_image(tiny, tmp_path, capsys):
    _, model = tiny
    (tmp_path / "blank.jpg").write_bytes(b"")
    line = user_error(["predict", f"model={model}", f"source={tmp_path / 'blank.jpg'}", "save=false"], capsys)
    assert "blank.jpg: empty file (0 bytes)" in line


def test_project_under_a_regular_file(tiny, tmp_path, capsys):
    data, model = tiny
    (tmp_path / "file").write_text("not a folder")
    line = user_error(["train", f"model={model}", f"data={data}", f"project={tmp_path / 'file' / 'runs'}",
                       *TINY_TRAIN], capsys)
    assert "Not a directory" in line and str(tmp_path / "file") in line


@pytest.mark.parametrize("command", ["train", "predict", "val", "export", "bench"])
def test_imgsz_off_the_model_stride_is_refused(tiny, tmp_path, capsys, command):
    data, model = tiny
    extra = {"train": [f"data={data}", f"project={tmp_path}", *TINY_TRAIN[1:]],
             "predict": [f"source={data.parent / 'images' / 'val'}", "save=false"],
             "val": [f"data={data}", "plots=false"], "export": [f"project={tmp_path}"], "bench": ["formats=torch"]}
    line = user_error([command, f"model={model}", "imgsz=63", *extra[command]], capsys)
    assert "imgsz=63 is not a multiple of the model's largest stride 32 (try imgsz=64)" in line
    assert not any(tmp_path.iterdir())


def test_val_with_both_a_model_and_json_files_is_refused(tiny, capsys):
    data, model = tiny
    gt = data.parent / "annotations" / "instances_val.json"
    line = user_error(["val", f"model={model}", f"data={data}", f"gt={gt}", f"pred={gt}"], capsys)
    assert "not both" in line and "model=" in line


def test_resume_refuses_settings_it_cannot_take(tiny, tmp_path, capsys):
    data, model = tiny

    def stop(trainer):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_settings(data, tmp_path, model=str(model), val=False), on_epoch_end=[stop]).train()
    last = tmp_path / "run" / "weights" / "last.pt"
    for change in ("epochs=5", "lr0=0.5", f"data={data.parent / 'other.yaml'}"):
        line = user_error(["train", f"resume={last}", change], capsys)
        assert change in line and "cannot change in a resumed run" in line
    assert main(["train", f"resume={last}", "epochs=2", "workers=0", "json=true"]) == 0  # an unchanged value is fine


def test_a_missing_labels_folder_is_flagged_and_training_refuses_before_the_first_epoch(tiny, tmp_path, capsys):
    data, model = tiny
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    shutil.rmtree(copy / "labels")
    assert main(["check-data", f"data={copy / data.name}"]) == 0
    out = capsys.readouterr().out
    assert "NOT USABLE for training or validation: none of its 8 images has a label file" in out
    line = user_error(["train", f"model={model}", f"data={copy / data.name}", f"project={tmp_path}", "name=run",
                       *TINY_TRAIN], capsys)
    assert "the train split" in line and "labels/ folder" in line
    assert not (tmp_path / "run" / "results.csv").exists()


def test_a_data_yaml_without_a_val_split_is_refused_before_training(tiny, tmp_path, capsys):
    data, model = tiny
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(yaml.safe_dump({"path": str(data.parent), "train": "images/train", "names": ["a", "b", "c", "d"]}))
    line = user_error(["train", f"model={model}", f"data={no_val}", f"project={tmp_path}", "name=run", *TINY_TRAIN],
                      capsys)
    assert "no_val.yaml has no val images" in line and "val=false" in line
    assert not (tmp_path / "run").exists()


def test_text_files_that_are_not_utf8_are_named(tiny, tmp_path, capsys):
    _, model = tiny
    (tmp_path / "latin1.yaml").write_bytes(b"names: [caf\xe9]\ntrain: images\n")
    (tmp_path / "list.txt").write_bytes(b"caf\xe9.jpg\n")
    assert "latin1.yaml: not UTF-8 text (byte 0xe9" in user_error(["check-data", f"data={tmp_path / 'latin1.yaml'}"],
                                                                  capsys)
    line = user_error(["predict", f"model={model}", f"source={tmp_path / 'list.txt'}", "save=false"], capsys)
    assert "list.txt: not UTF-8 text (byte 0xe9 at offset 3)" in line


def test_a_non_utf8_file_name_is_used_and_reported_by_name(tiny, tmp_path, capsys):
    data, _ = tiny
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    first = sorted((copy / "images" / "train").iterdir())[0]
    os.rename(first, os.fsencode(first.parent) + b"/odd\xff.jpg")
    assert main(["check-data", f"data={copy / data.name}", "json=true"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["splits"]["train"]["images"] == 8  # the image is used
    entries = result["problems"]["train"]["entries"]
    assert [e["kind"] for e in entries if "odd" in e["file"]] == ["missing_label"]  # its label kept the old name
    assert main(["check-data", f"data={copy / data.name}"]) == 0
    assert "odd\\udcff.jpg" in capsys.readouterr().out  # printed with an escape, never a UnicodeEncodeError


def coco_copy(data, tmp_path) -> tuple[dict, object]:
    gt = json.loads((data.parent / "annotations" / "instances_val.json").read_text())
    file = tmp_path / "annotations" / "instances_val.json"
    file.parent.mkdir()
    (tmp_path / "images").symlink_to(data.parent / "images")
    return gt, file


def test_a_coco_json_with_a_missing_key_names_the_key_and_the_annotation(tiny, tmp_path, capsys):
    data, _ = tiny
    gt, file = coco_copy(data, tmp_path)
    del gt["annotations"][2]["bbox"]
    file.write_text(json.dumps(gt))
    line = user_error(["convert", f"source={file}", "to=yolo", f"out={tmp_path / 'out'}"], capsys)
    assert line.endswith("instances_val.json: annotations entry 2 has no 'bbox'")


def test_convert_reports_a_coco_annotation_of_an_unknown_image(tiny, tmp_path, capsys):
    data, _ = tiny
    gt, file = coco_copy(data, tmp_path)
    gt["annotations"][0]["image_id"] = 999
    file.write_text(json.dumps(gt))
    assert main(["convert", f"source={file}", "to=yolo", f"out={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert "1 orphan_annotation" in out and "image_id 999 is not among the images" in out


def test_convert_reports_a_voc_image_listed_without_its_xml(tiny, tmp_path, capsys):
    data, _ = tiny
    voc = tmp_path / "voc"
    assert main(["convert", f"source={data}", "to=voc", f"out={voc}"]) == 0
    capsys.readouterr()
    xml = sorted((voc / "Annotations").glob("train_*.xml"))
    xml[0].unlink()
    unlisted = ET.parse(xml[1]).getroot().findtext("filename")
    sets = voc / "ImageSets" / "Main" / "train.txt"
    sets.write_text(sets.read_text().replace(f"{xml[1].stem}\n", ""))
    assert main(["convert", f"source={voc}", "to=yolo", f"out={tmp_path / 'yolo'}"]) == 0
    out = capsys.readouterr().out
    assert "1 missing_annotation" in out and f"{xml[0].stem}: no " in out
    assert "1 unlisted_image" in out and unlisted in out


def test_compare_checks_every_model_and_the_data_before_training(tiny, tmp_path, capsys):
    data, model = tiny
    line = user_error(["compare", f"models={model},yolov8n-slimnek.yaml", f"data={data}", "optimizer=SGD",
                       "imgsz=64", "seeds=1", "epochs=1", f"project={tmp_path}", "name=cmp"], capsys)
    assert "yolov8n-slimnek.yaml" in line and "not found" in line
    assert not (tmp_path / "cmp").exists()  # nothing trained


def test_compare_locks_its_folder(tiny, tmp_path, capsys):
    data, model = tiny
    with RunLock(tmp_path / "cmp"):
        line = user_error(["compare", f"models={model},{model}", f"data={data}", "optimizer=SGD", "imgsz=64",
                           "report_only=true", f"project={tmp_path}", "name=cmp"], capsys)
    assert f"process {os.getpid()} started" in line


def test_two_trainings_started_together_on_one_folder_exactly_one_is_refused(tiny, tmp_path):
    data, model = tiny
    argv = [sys.executable, "-m", "yololab", "train", f"model={model}", f"data={data}", f"project={tmp_path}",
            "name=same", "exist_ok=true", "epochs=500", "val=false", *TINY_TRAIN]  # the holder trains until killed
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = next(p for p in procs if p.poll() is not None)
        holder = next(p for p in procs if p is not refused)
        err = refused.communicate()[1]
        assert refused.returncode == 2 and holder.poll() is None, err
        assert f"in use by process {holder.pid} started" in err and "Traceback" not in err
    finally:
        for p in procs:
            p.kill()  # kill -9: the OS releases the holder's lock
            p.communicate()
    with RunLock(tmp_path / "same"):
        pass  # free again
