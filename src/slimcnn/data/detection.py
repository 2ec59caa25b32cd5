"""Detection data: COCO json, YOLO txt folders and Pascal-VOC xml, read into one representation.

Every loader returns a :class:`DetectionSet`: images (path + size) with boxes as ``xyxy`` pixels
and 0-based contiguous labels, plus the class names. Spec strings accepted by
:func:`load_detection`:

- a YOLO folder (``images/<split>/*.jpg`` + ``labels/<split>/*.txt``, optional ``*.yaml`` with
  ``names``), e.g. ``coco8``: splits ``train``/``val``;
- a VOC folder (``annotations/*.xml`` + ``images/``); when ``data/train_labels.csv`` and
  ``data/test_labels.csv`` exist (the raccoon set) they define the train/test split;
- a COCO json file (``images`` / ``annotations`` / ``categories``); image files are looked up
  next to the json or in an ``images/`` folder beside it.
"""

from __future__ import annotations

import csv
import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from slimcnn._io import UNREADABLE_HINT, UNREADABLE_IMAGE, open_image, unreadable_reason
from slimcnn.errors import DataError

__all__ = [
    "DetectionSample", "DetectionSet", "load_detection", "read_coco_json", "read_voc", "read_yolo", "write_yolo_dataset",
]

log = logging.getLogger(__name__)

_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class DetectionSample:
    """One image and its ground truth (``boxes`` as (x1, y1, x2, y2) pixels, ``labels`` 0-based)."""

    path: Path
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    labels: tuple[int, ...] = ()
    image_id: int | None = None
    """The image's id in its COCO json (COCO json input only)."""


@dataclass(frozen=True)
class DetectionSet:
    """A list of samples and the class names (index = label)."""

    samples: tuple[DetectionSample, ...]
    names: tuple[str, ...]
    source: str = ""
    split: str = ""
    coco_ids: tuple[int, ...] = field(default_factory=tuple)
    """Original COCO category id of each label (COCO json input only)."""
    coco_json: str = ""
    """The COCO json the set was read from: evaluation hands it to pycocotools as is (crowd regions,
    segmentation areas), so mAP matches the official protocol."""

    def __len__(self) -> int:
        return len(self.samples)

    def head(self, n: int | None) -> DetectionSet:
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None:
            return self
        return DetectionSet(self.samples[:n], self.names, self.source, self.split, self.coco_ids, self.coco_json)


def _image_size(path: Path) -> tuple[int, int]:

    try:
        with open_image(path) as im:
            return im.size
    except UNREADABLE_IMAGE as e:
        raise DataError(f"cannot read image {path} ({unreadable_reason(e)}): {UNREADABLE_HINT}") from e


# ----------------------------------------------------------------------------------------- YOLO


def _yolo_names(root: Path) -> tuple[str, ...]:
    for y in sorted(root.glob("*.yaml")):
        import yaml

        cfg = yaml.safe_load(y.read_text()) or {}
        names = cfg.get("names")
        if isinstance(names, dict):
            return tuple(str(names[k]) for k in sorted(names))
        if isinstance(names, list):
            return tuple(str(n) for n in names)
    return ()


def read_yolo(root: str | Path, split: str = "val") -> DetectionSet:
    """Read ``root/images/<split>`` + ``root/labels/<split>`` (``cls cx cy w h`` normalised)."""
    root = Path(root)
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    if not img_dir.is_dir():
        img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir():
        raise DataError(f"{root} is not a YOLO folder: expected images/{split}/ (or images/) and labels/")
    samples, max_label = [], -1
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMG_EXT):
        w, h = _image_size(img)
        boxes, labels = [], []
        txt = lab_dir / (img.stem + ".txt")
        if txt.is_file():
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 5:
                    raise DataError(f"{txt}:{n}: expected 'class cx cy w h', got {line!r}")
                c, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:5])
                boxes.append(((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
                labels.append(c)
                max_label = max(max_label, c)
        samples.append(DetectionSample(img, w, h, tuple(boxes), tuple(labels)))
    if not samples:
        raise DataError(f"no images in {img_dir}")
    names = _yolo_names(root) or tuple(str(i) for i in range(max_label + 1))
    return DetectionSet(tuple(samples), names, str(root), split)


# ------------------------------------------------------------------------------------------ VOC


def _parse_voc(xml: Path) -> tuple[str, int, int, list[tuple[str, tuple[float, float, float, float]]]]:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise DataError(f"cannot parse {xml}: {e}") from e
    size = root.find("size")
    w = int(float(size.findtext("width", "0"))) if size is not None else 0
    h = int(float(size.findtext("height", "0"))) if size is not None else 0
    objs = []
    for o in root.iter("object"):
        bb = o.find("bndbox")
        if bb is None:
            continue
        box = tuple(float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        objs.append((o.findtext("name", "object").strip(), box))
    return root.findtext("filename", xml.stem + ".jpg").strip(), w, h, objs  # type: ignore[return-value]


def _csv_files(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return list(dict.fromkeys(row["filename"] for row in csv.DictReader(f)))


def read_voc(root: str | Path, split: str = "test") -> DetectionSet:
    """Read ``root/annotations/*.xml`` (+ ``root/images``); ``split`` picks ``data/<split>_labels.csv``.

    Without split CSVs every annotated image is used, whatever ``split`` says.
    """
    root = Path(root)
    ann_dir = root / "annotations" if (root / "annotations").is_dir() else root / "Annotations"
    img_dir = root / "images" if (root / "images").is_dir() else root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DataError(f"{root} is not a VOC folder: expected annotations/*.xml")
    parsed = {}
    for xml in sorted(ann_dir.glob("*.xml")):
        fname, w, h, objs = _parse_voc(xml)
        parsed[fname] = (w, h, objs)
    split_csv = root / "data" / f"{split}_labels.csv"
    if split_csv.is_file():
        files = _csv_files(split_csv)
        missing = [f for f in files if f not in parsed]
        if missing:
            raise DataError(f"{split_csv} lists images without annotations: {missing[:5]}")
    else:
        if (root / "data").is_dir():
            raise DataError(f"no split file {split_csv}; available: "
                            f"{sorted(p.name for p in (root / 'data').glob('*_labels.csv'))}")
        files = sorted(parsed)
    names = tuple(sorted({n for _, _, objs in parsed.values() for n, _ in objs}))
    index = {n: i for i, n in enumerate(names)}
    samples = []
    for f in files:
        w, h, objs = parsed[f]
        path = img_dir / f
        if not path.is_file():
            raise DataError(f"image {path} (from {ann_dir}) does not exist")
        if w <= 0 or h <= 0:
            w, h = _image_size(path)
        samples.append(DetectionSample(path, w, h, tuple(b for _, b in objs), tuple(index[n] for n, _ in objs)))
    return DetectionSet(tuple(samples), names, str(root), split)


# ----------------------------------------------------------------------------------------- COCO


def read_coco_json(path: str | Path, image_dir: str | Path | None = None) -> DetectionSet:
    """Read a COCO detection json; category ids are mapped to contiguous 0-based labels.

    Crowd annotations are left out of the samples' boxes (they are no training targets); evaluation
    reads the json itself, crowd regions included. ``image_dir`` defaults to the json's folder, or
    ``images/`` beside it when the files are there.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read COCO json {path}: {e}") from e
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path} is not a COCO detection json: no '{key}' key")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            anns.setdefault(a["image_id"], []).append(a)
    candidates = [Path(image_dir)] if image_dir else [path.parent, path.parent / "images"]
    samples = []
    for im in sorted(data["images"], key=lambda i: i["id"]):
        img = next((d / im["file_name"] for d in candidates if (d / im["file_name"]).is_file()), None)
        if img is None:
            raise DataError(f"image {im['file_name']} of {path} not found in {[str(c) for c in candidates]}")
        boxes = tuple((x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns.get(im["id"], [])))
        labels = tuple(index[a["category_id"]] for a in anns.get(im["id"], []))
        samples.append(DetectionSample(img, int(im["width"]), int(im["height"]), boxes, labels, int(im["id"])))
    return DetectionSet(tuple(samples), tuple(c["name"] for c in cats), str(path), "", tuple(c["id"] for c in cats),
                        str(path.resolve()))


def load_detection(spec: str | Path, split: str = "val") -> DetectionSet:
    """Read a detection set from a spec string (YOLO folder, VOC folder or COCO json).

    Args:
        spec: the path (see the module docstring for the layouts).
        split: ``"train"`` or ``"val"``; VOC folders map ``"val"`` to their ``test`` split.

    Raises:
        DataError: the path does not exist or has none of the supported layouts.
    """
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataError(f"detection data {p} does not exist")
    if p.is_file():
        if p.suffix == ".json":
            return read_coco_json(p)
        if p.suffix in (".yaml", ".yml"):
            return read_yolo(p.parent, split)
        raise DataError(f"{p}: expected a COCO .json, a YOLO .yaml or a folder")
    if (p / "annotations").is_dir() or (p / "Annotations").is_dir():
        return read_voc(p, "test" if split == "val" else split)
    if (p / "images").is_dir():
        return read_yolo(p, split)
    jsons = sorted(p.glob("*.json"))
    if len(jsons) == 1:
        return read_coco_json(jsons[0])
    raise DataError(f"{p} has no known detection layout: expected images/+labels/ (YOLO), "
                    "annotations/*.xml (VOC) or a COCO .json")


def write_yolo_dataset(splits: dict[str, DetectionSet], folder: str | Path) -> Path:
    """Lay ``splits`` out as a YOLO dataset under ``folder`` and return its ``data.yaml``.

    Images are symlinked (never copied or written next to the source, so read-only data stays
    untouched; tools such as ultralytics write their label caches under ``folder``); labels are
    written as ``cls cx cy w h`` normalised. File names get the sample index as prefix so equal
    stems from different folders cannot collide.

    Args:
        splits: ``{"train": set, "val": set}`` (any split names; all must share one class list).
        folder: where to write (created; must not exist or be empty).

    Raises:
        DataError: the splits have different class names, or ``folder`` is not empty.
    """
    import yaml

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty; write the YOLO dataset into a new folder")
    names = {s.names for s in splits.values()}
    if len(names) != 1:
        raise DataError(f"splits {sorted(splits)} have different class names; they must share one list")
    for split, data in splits.items():
        img_dir, lab_dir = folder / "images" / split, folder / "labels" / split
        img_dir.mkdir(parents=True)
        lab_dir.mkdir(parents=True)
        for i, s in enumerate(data.samples):
            stem = f"{i:06d}_{s.path.stem}"
            (img_dir / f"{stem}{s.path.suffix}").symlink_to(s.path.resolve())
            rows = [f"{c} {(x1 + x2) / 2 / s.width:.6f} {(y1 + y2) / 2 / s.height:.6f} "
                    f"{(x2 - x1) / s.width:.6f} {(y2 - y1) / s.height:.6f}"
                    for (x1, y1, x2, y2), c in zip(s.boxes, s.labels, strict=True)]
            (lab_dir / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
    cfg = {"path": str(folder.resolve()), **{k: f"images/{k}" for k in splits},
           "names": dict(enumerate(next(iter(names))))}
    out = folder / "data.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out
