"""YOLO txt, COCO json and Pascal VOC xml: readers and writers through one internal representation.

Every reader returns a DetectionSet (class names, ImageRecords per split, the problems found); every
writer takes one. Boxes are validated with the same rules as training labels (see ``labels.py``).
COCO ``category_id`` is written as the class index, image ids follow ``records.coco_image_ids``.
"""

from __future__ import annotations

import filecmp
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import UserError
from ..utils.files import read_text
from .boxes import scale_boxes, xywh_to_xyxy
from .config import load_data_config
from .image import ImageError, inspect_image
from .labels import LabelError, clean_boxes, load_labels
from .records import ImageRecord, write_coco, write_label_file
from .report import ProblemReport

FORMATS = ("yolo", "coco", "voc")


@dataclass
class DetectionSet:
    """A dataset in the internal representation."""

    names: dict[int, str]
    splits: dict[str, list[ImageRecord]]
    report: ProblemReport = field(default_factory=ProblemReport)

    def summary(self) -> dict[str, dict[str, int]]:
        """Images and boxes per split."""
        return {s: {"images": len(r), "boxes": int(sum(len(x.cls) for x in r))} for s, r in self.splits.items()}


# --- readers
def read_yolo(data: str | Path) -> DetectionSet:
    """A YOLO dataset from its ``data.yaml`` (all splits present)."""
    cfg = load_data_config(data)
    dset = DetectionSet(cfg.names, {})
    for split in ("train", "val", "test"):
        files = cfg.split(split)
        if not files:
            continue
        labels, report = load_labels(files, cfg.nc)
        dset.report.extend(report)
        dset.splits[split] = [
            ImageRecord(Path(lb["im_file"]), *lb["shape"], lb["cls"].reshape(-1).astype(np.int64),
                        scale_boxes(xywh_to_xyxy(lb["bboxes"]), lb["shape"][1], lb["shape"][0]))
            for lb in labels
        ]
    return dset


def read_coco(json_file: str | Path, image_dir: str | Path | None = None, split: str | None = None) -> DetectionSet:
    """A COCO detection json (``instances_<split>.json``); crowd annotations are skipped and reported.

    Classes are the categories in ascending id order. ``image_dir`` defaults to ``images/<split>``
    beside the json's folder, then ``images/``, then the json's own folder.
    """
    json_file = Path(json_file)
    split = split or _split_from_json_name(json_file)
    try:
        coco = json.loads(json_file.read_bytes())
    except ValueError as e:
        raise UserError(f"{json_file}: not a COCO detection json ({type(e).__name__}: {e})") from None
    categories, images, annotations = _checked_coco(coco, json_file)
    categories = sorted(categories, key=lambda c: c["id"])
    names = {i: str(c["name"]) for i, c in enumerate(categories)}
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    image_dir = Path(image_dir) if image_dir else _guess_image_dir(json_file, split, [im["file_name"] for im in images])
    by_image: dict[int, list[dict]] = {}
    dset = DetectionSet(names, {split: []})
    image_ids = {im["id"] for im in images}
    for i, a in enumerate(annotations):
        if a["image_id"] in image_ids:
            by_image.setdefault(a["image_id"], []).append(a)
        else:
            dset.report.add("orphan_annotation", json_file,
                            f"annotation {i} (id {a.get('id')}): image_id {a['image_id']!r} is not among the images")
    for im in sorted(images, key=lambda x: x["file_name"]):
        file = image_dir / im["file_name"]
        anns = by_image.get(im["id"], [])
        for a in anns:
            if a.get("iscrowd"):
                dset.report.add("crowd_box", file, f"annotation {a.get('id')}: crowd region skipped")
        anns = [a for a in anns if not a.get("iscrowd")]
        unknown = [a for a in anns if a["category_id"] not in index_of]
        if unknown:
            dset.report.add("class_out_of_range", file, f"annotation {unknown[0].get('id')}: category_id "
                                                        f"{unknown[0]['category_id']} not in categories")
            continue
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        xyxy = np.concatenate((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1)
        cls = np.array([index_of[a["category_id"]] for a in anns], np.int64)
        record = _validated_record(file, cls, xyxy, [f"annotation {a.get('id', i)}" for i, a in enumerate(anns)],
                                   (im.get("height"), im.get("width")), dset.report)
        if record is not None:
            dset.splits[split].append(record)
    return dset


COCO_FIELDS = {"categories": ("id", "name"), "images": ("id", "file_name"),
               "annotations": ("image_id", "category_id", "bbox")}


def _checked_coco(coco: Any, json_file: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """The categories, images and annotations of a COCO dict, each entry checked for the fields the reader uses;
    a missing or wrong one is an error naming the list, the entry's index and the key."""
    if not isinstance(coco, dict):
        raise UserError(f"{json_file}: not a COCO detection json (a {type(coco).__name__}, not an object)")
    lists = []
    for section, keys in COCO_FIELDS.items():
        entries = coco.get(section, [] if section == "annotations" else None)
        if not isinstance(entries, list):
            raise UserError(f"{json_file}: not a COCO detection json ('{section}' must be a list)")
        for i, entry in enumerate(entries):
            where = f"{json_file}: {section} entry {i}"
            missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise UserError(f"{where} has no '{missing[0]}'")
            for key in ("id", "image_id", "category_id"):
                if key in entry and not _is_int(entry[key]):
                    raise UserError(f"{where}: {key} must be an integer, got {entry[key]!r}")
            for key in ("height", "width"):
                if entry.get(key) is not None and not (_is_int(entry[key]) and entry[key] > 0):
                    raise UserError(f"{where}: {key} must be a positive integer, got {entry[key]!r}")
            if section == "images" and not isinstance(entry["file_name"], str):
                raise UserError(f"{where}: file_name must be a string, got {entry['file_name']!r}")
            if section == "annotations" and not _is_xywh(entry["bbox"]):
                raise UserError(f"{where} (id {entry.get('id')}): bbox must be 4 numbers [x, y, w, h], got "
                                f"{entry['bbox']!r}")
        lists.append(entries)
    return lists[0], lists[1], lists[2]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_xywh(bbox: Any) -> bool:
    return (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))


def read_voc(ann_dir: str | Path, image_dir: str | Path | None = None, names: list[str] | None = None,
             split: str = "train") -> DetectionSet:
    """Pascal VOC xml files (``Annotations/*.xml``); box corners are taken as continuous pixel coordinates.

    ``names`` fixes the class order (unknown names then skip their image); by default the order of a
    ``classes.txt`` beside the annotation folder (written by ``write_voc``), else the sorted names found.
    ``image_dir`` defaults to ``JPEGImages`` beside the annotation folder, else the same folder.
    """
    ann_dir = Path(ann_dir)
    xml_files = sorted(ann_dir.glob("*.xml"))
    if not xml_files:
        raise FileNotFoundError(f"no .xml annotation files in {ann_dir}")
    parsed = [_parse_voc_xml(f) for f in xml_files]
    classes_txt = ann_dir.parent / "classes.txt"
    if names is None and classes_txt.is_file():
        names = [n.strip() for n in read_text(classes_txt).splitlines() if n.strip()]
    if names is None:
        names = sorted({obj[0] for p in parsed if p for obj in p[3]})
    index_of = {n: i for i, n in enumerate(names)}
    if image_dir is None:
        image_dir = ann_dir.parent / "JPEGImages" if (ann_dir.parent / "JPEGImages").is_dir() else ann_dir
    dset = DetectionSet(dict(enumerate(names)), {split: []})
    for xml_file, p in zip(xml_files, parsed):
        if p is None:
            dset.report.add("unreadable_label", xml_file, "not a parsable VOC xml")
            continue
        filename, h, w, objects = p
        file = Path(image_dir) / (filename or f"{xml_file.stem}.jpg")
        unknown = [o[0] for o in objects if o[0] not in index_of]
        if unknown:
            dset.report.add("class_out_of_range", xml_file, f"object name '{unknown[0]}' not in names")
            continue
        cls = np.array([index_of[o[0]] for o in objects], np.int64)
        xyxy = np.array([o[1] for o in objects], np.float32).reshape(-1, 4)
        record = _validated_record(file, cls, xyxy, [f"object {i}" for i in range(1, len(objects) + 1)], (h, w),
                                   dset.report)
        if record is not None:
            dset.splits[split].append(record)
    return dset


def _parse_voc_xml(path: Path) -> tuple[str, int | None, int | None, list[tuple[str, list[float]]]] | None:
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        h = int(float(size.findtext("height"))) if size is not None and size.findtext("height") else None
        w = int(float(size.findtext("width"))) if size is not None and size.findtext("width") else None
        objects = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            objects.append((obj.findtext("name", "").strip(),
                            [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]))
    except (ET.ParseError, AttributeError, TypeError, ValueError, OverflowError):
        return None
    if (h is not None and h <= 0) or (w is not None and w <= 0):
        return None
    return root.findtext("filename", "").strip(), h or None, w or None, objects


def _validated_record(file: Path, cls: np.ndarray, xyxy: np.ndarray, where: list[str], shape: tuple,
                      report: ProblemReport) -> ImageRecord | None:
    """An ImageRecord after the image check and the label box rules, or None (reported) when unusable.

    ``xyxy`` are pixels of an image of ``shape`` (h, w; None entries: the real size); ``where`` names each box.
    """
    try:
        real_shape, note = inspect_image(file)
    except ImageError as e:
        report.add(e.kind, file, str(e))
        return None
    if note:
        report.add("converted_image", file, note)
    h, w = (shape if all(shape) else real_shape)
    try:
        cls, norm, fixes = clean_boxes(cls, scale_boxes(xyxy, 1 / w, 1 / h), where, (h, w))
    except LabelError as e:
        report.add(e.kind, file, str(e))
        return None
    for kind, message in fixes:
        report.add(kind, file, message)
    return ImageRecord(file, h, w, cls.astype(np.int64), scale_boxes(norm, w, h))


def _split_from_json_name(json_file: Path) -> str:
    stem = json_file.stem
    return stem.split("instances_", 1)[1] if stem.startswith("instances_") else "train"


def _guess_image_dir(json_file: Path, split: str, file_names: list[str]) -> Path:
    base = json_file.parent.parent
    candidates = [base / "images" / split, base / "images", json_file.parent, base]
    probe = file_names[0] if file_names else None
    for d in candidates:
        if probe is None or (d / probe).is_file():
            return d
    raise FileNotFoundError(f"{json_file}: images not found in any of {', '.join(map(str, candidates))}; "
                            "pass the image folder")


# --- writers
def write_yolo(dset: DetectionSet, out: str | Path) -> Path:
    """``out/images/<split>``, ``out/labels/<split>``, ``out/data.yaml``; returns the yaml path."""
    out = Path(out)
    for split, records in dset.splits.items():
        for r in records:
            _place_image(r.file, out / "images" / split / r.file.name)
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            write_label_file(out / "labels" / split / f"{r.file.stem}.txt", r.cls, r.boxes, r.width, r.height)
    data = {"path": ".", **{s: f"images/{s}" for s in dset.splits}, "names": dict(dset.names)}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def write_voc(dset: DetectionSet, out: str | Path) -> Path:
    """``out/Annotations/*.xml``, ``out/JPEGImages/*``, ``out/ImageSets/Main/<split>.txt`` and
    ``out/classes.txt`` (class order); returns ``out``."""
    out = Path(out)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{dset.names[i]}\n" for i in sorted(dset.names)))
    for split, records in dset.splits.items():
        for r in records:
            _place_image(r.file, out / "JPEGImages" / r.file.name)
            _voc_tree(r, dset.names).write(out / "Annotations" / f"{r.file.stem}.xml", encoding="utf-8")
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{r.file.stem}\n" for r in records))
    return out


def _voc_tree(r: ImageRecord, names: dict[int, str]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = r.file.name
    size = ET.SubElement(root, "size")
    for key, value in (("width", r.width), ("height", r.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for c, box in zip(r.cls, r.boxes.tolist()):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[int(c)]
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, key).text = f"{value:.2f}"
    ET.indent(root)
    return ET.ElementTree(root)


def _place_image(src: Path, dst: Path) -> None:
    """Hard-link (else copy) an image into the output; a different file already there is an error."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.samefile(src) or filecmp.cmp(src, dst, shallow=False):
            return
        raise FileExistsError(f"{dst} already exists with different content (two images named {src.name}?)")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --- conversion
def read_any(source: str | Path, *, images: str | Path | None = None, split: str | None = None) -> DetectionSet:
    """Read ``source`` by its kind: ``data.yaml`` (YOLO), a COCO ``.json`` or a folder holding
    ``annotations/instances_*.json`` (COCO, every split), or a VOC folder (``Annotations/*.xml``)."""
    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        return read_yolo(source)
    if source.suffix == ".json":
        return read_coco(source, images, split)
    coco_jsons = sorted((source / "annotations").glob("instances_*.json")) if source.is_dir() else []
    if coco_jsons:
        parts = [read_coco(j, images) for j in coco_jsons]
        if any(p.names != parts[0].names for p in parts):
            raise UserError(f"the COCO files in {source / 'annotations'} have different categories")
        merged = DetectionSet(parts[0].names, {})
        for p in parts:
            merged.splits.update(p.splits)
            merged.report.extend(p.report)
        return merged
    if source.is_dir():
        ann_dir = source / "Annotations" if (source / "Annotations").is_dir() else source
        dset = read_voc(ann_dir, images, split=split or "train")
        return dset if split else _split_by_image_sets(dset, source / "ImageSets" / "Main", ann_dir)
    raise UserError(f"cannot tell the format of {source}: expected a data.yaml, a COCO .json or a VOC folder")


def _split_by_image_sets(dset: DetectionSet, sets_dir: Path, ann_dir: Path) -> DetectionSet:
    """Regroup a single-split VOC set by ``ImageSets/Main/{train,val,test}.txt`` when those lists exist; listed
    names without an xml and annotated images in no list are reported."""
    lists = {s: read_text(f).split() for s in ("train", "val", "test") if (f := sets_dir / f"{s}.txt").is_file()}
    if not lists:
        return dset
    records = [r for rs in dset.splits.values() for r in rs]
    splits = {s: [r for r in records if r.file.stem in set(stems)] for s, stems in lists.items()}
    for s, stems in lists.items():
        for stem in sorted(set(stems)):
            if not (ann_dir / f"{stem}.xml").is_file():
                dset.report.add("missing_annotation", sets_dir / f"{s}.txt", f"{stem}: no {ann_dir / stem}.xml")
    listed = {stem for stems in lists.values() for stem in stems}
    for r in records:
        if r.file.stem not in listed:
            dset.report.add("unlisted_image", r.file, f"in none of {', '.join(f'{s}.txt' for s in lists)}")
    return DetectionSet(dset.names, splits, dset.report)


def convert(source: str | Path, out: str | Path, to: str, *, images: str | Path | None = None,
            split: str | None = None) -> dict:
    """Convert a dataset into ``to`` (yolo, coco or voc) under ``out``; images are hard-linked or copied.

    Returns ``{"source", "out", "to", "splits": {split: {"images", "boxes"}}, "problems"}``.
    """
    if to not in FORMATS:
        raise UserError(f"unknown format '{to}', expected one of {', '.join(FORMATS)}")
    dset = read_any(source, images=images, split=split)
    out = Path(out)
    if to == "yolo":
        write_yolo(dset, out)
    elif to == "coco":
        for s, records in dset.splits.items():
            for r in records:
                _place_image(r.file, out / "images" / s / r.file.name)
            write_coco(records, dset.names, out / "annotations" / f"instances_{s}.json")
    else:
        write_voc(dset, out)
    return {"source": str(source), "out": str(out), "to": to, "splits": dset.summary(),
            "problems": dset.report.to_dict()}
