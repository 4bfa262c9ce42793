"""Random label lines, COCO json, VOC xml, model YAML rows and CLI values end in a valid result or a user error
(what the CLI prints as one line), never another exception and never a hang (bounded examples, per-example deadline).
"""

import json
import math
import signal
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yololab.cli import COMMANDS, PATH_ERRORS, command_settings, parse_argv
from yololab.data import read_coco, read_voc
from yololab.data.labels import verify_sample
from yololab.errors import UserError
from yololab.nn import DetectionModel

USER_ERRORS = (UserError, *PATH_ERRORS)
FUZZ = settings(max_examples=40, deadline=10_000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

HANG_S = 60  # a whole fuzz test (all its examples) is stopped after this long


@pytest.fixture(autouse=True)
def no_hang():
    """Stop a fuzz test that runs past ``HANG_S``: hypothesis's deadline reports slow examples only afterwards."""
    def stop(signum, frame):
        raise TimeoutError(f"a fuzz test ran past {HANG_S} s: an input makes yololab hang")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(HANG_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
numbers = st.one_of(st.floats(-2, 3), st.integers(-3, 6), st.sampled_from([math.nan, math.inf, 1e39, -0.0, 1e-9]))


def ends_cleanly(call):
    """``call()``'s result, or the user error it raised (which must say something)."""
    try:
        return call()
    except USER_ERRORS as e:
        assert str(e)
        return e


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """A folder with one 48x64 image, ``a.jpg``."""
    folder = tmp_path_factory.mktemp("fuzz_images")
    cv2.imwrite(str(folder / "a.jpg"), np.full((48, 64, 3), 127, np.uint8))
    return folder


label_rows = st.lists(st.one_of(
    st.lists(st.one_of(numbers.map(str), st.text(max_size=4)), max_size=7).map(" ".join),
    st.text(max_size=20)), max_size=6).map("\n".join)


@FUZZ
@given(text=label_rows, raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_label_files(image_dir, text, raw):
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = Path(tmp) / "images", Path(tmp) / "labels"
        images.mkdir(), labels.mkdir()
        (images / "a.jpg").write_bytes((image_dir / "a.jpg").read_bytes())
        (labels / "a.txt").write_bytes(raw if raw is not None else text.encode("utf-8", "surrogatepass"))
        label, report = verify_sample(images / "a.jpg", nc=4)
    if label is None:
        assert report  # a skipped image is reported
    else:
        assert np.isfinite(label["bboxes"]).all() and ((label["cls"] >= 0) & (label["cls"] < 4)).all()


def maybe(value_strategy):
    """A field's usual value, or any JSON value in its place."""
    return st.one_of(value_strategy, value_strategy, json_values)


coco_category = st.fixed_dictionaries({"id": maybe(st.integers(0, 3)), "name": maybe(st.text(max_size=5))})
coco_image = st.fixed_dictionaries({"id": maybe(st.integers(0, 3)), "file_name": maybe(st.sampled_from(["a.jpg",
                                                                                                       "b.jpg"]))},
                                   optional={"height": maybe(st.integers(-1, 60)), "width": maybe(st.integers(-1, 70))})
coco_annotation = st.fixed_dictionaries(
    {"image_id": maybe(st.integers(0, 4)), "category_id": maybe(st.integers(0, 4)),
     "bbox": maybe(st.lists(numbers.map(lambda v: v * 40), min_size=4, max_size=4))},
    optional={"id": maybe(st.integers(0, 9)), "iscrowd": maybe(st.integers(0, 1))})


def drop_keys(entries: st.SearchStrategy) -> st.SearchStrategy:
    """Entries with, now and then, one key removed."""
    return st.tuples(entries, st.integers(0, 5)).map(
        lambda t: {k: v for i, (k, v) in enumerate(t[0].items()) if i != t[1]})


coco_json = st.one_of(json_values, st.fixed_dictionaries({
    "categories": maybe(st.lists(drop_keys(coco_category), max_size=3)),
    "images": maybe(st.lists(drop_keys(coco_image), max_size=3)),
    "annotations": maybe(st.lists(drop_keys(coco_annotation), max_size=5)),
}))


@FUZZ
@given(coco=coco_json)
def test_coco_json(image_dir, coco):
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "instances_train.json"
        file.write_text(json.dumps(coco))
        result = ends_cleanly(lambda: read_coco(file, image_dir=image_dir))
    if not isinstance(result, Exception):
        for record in result.splits["train"]:
            assert np.isfinite(record.boxes).all() and (record.cls < len(result.names)).all()


xml_text = st.one_of(st.text(max_size=8), numbers.map(str))
voc_object = st.builds(
    lambda name, box, tags: "<object><name>{}</name><bndbox>{}</bndbox></object>".format(
        name, "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, box))),
    st.sampled_from(["cat", "dog", "", "<b/>"]), st.lists(numbers.map(lambda v: str(v * 40)), min_size=4, max_size=4),
    st.sampled_from([("xmin", "ymin", "xmax", "ymax"), ("xmin", "ymin", "xmax", "ymaxx")]))
voc_xml = st.one_of(st.text(max_size=40), st.builds(
    lambda file, h, w, objects: f"<annotation><filename>{file}</filename><size><height>{h}</height>"
                                f"<width>{w}</width></size>{''.join(objects)}</annotation>",
    st.sampled_from(["a.jpg", "b.jpg", ""]), xml_text, xml_text, st.lists(voc_object, max_size=3)))


@FUZZ
@given(xml=voc_xml)
def test_voc_xml(image_dir, xml):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a.xml").write_text(xml, errors="surrogatepass")
        result = ends_cleanly(lambda: read_voc(tmp, image_dir=image_dir))
    if not isinstance(result, Exception):
        assert sum(len(r) for r in result.splits.values()) + len(result.report.entries) >= 1  # used or reported


MODULES = ["Conv", "C2f", "C3", "SPPF", "Concat", "nn.Upsample", "Bottleneck", "GSConv", "Index", "SPConv", "Detect",
           "NoSuchModule", "eval"]
small_args = st.lists(st.one_of(st.integers(-1, 16), st.sampled_from(["nc", "nearest", None, True, 2.5]),
                                json_values), max_size=4)
model_row = st.tuples(st.one_of(st.integers(-3, 4), st.lists(st.integers(-2, 4), max_size=3), json_values),
                      st.one_of(st.integers(-1, 3), json_values), st.one_of(st.sampled_from(MODULES), json_values),
                      small_args).map(list)
model_yaml = st.one_of(json_values, st.fixed_dictionaries(
    {"nc": maybe(st.integers(1, 4)), "backbone": maybe(st.lists(maybe(model_row), min_size=1, max_size=4)),
     "head": maybe(st.lists(model_row, max_size=2).map(lambda rows: [*rows, [[-1], 1, "Detect", ["nc"]]]))}))


@FUZZ
@given(cfg=model_yaml)
def test_model_yaml_rows(cfg):
    model = ends_cleanly(lambda: DetectionModel(cfg))
    if not isinstance(model, Exception):
        assert len(model.stride) >= 1


COMMAND_KEYS = [(name, key) for name, command in sorted(COMMANDS.items()) for key in command.keys]
cli_text = st.one_of(st.text(max_size=12), numbers.map(str), st.sampled_from(["true", "[1, 2]", "{a: 1}", "!!python/none",
                                                                              "-1", "0", "1e9", "nan", "auto"]))


@FUZZ
@given(command_key=st.sampled_from(COMMAND_KEYS), value=cli_text, stray=st.lists(st.text(max_size=8), max_size=2))
def test_cli_values(command_key, value, stray):
    name, key = command_key
    result = ends_cleanly(lambda: command_settings(*parse_argv([name, f"{key}={value}", *stray])))
    if not isinstance(result, Exception):
        assert key in result.given
