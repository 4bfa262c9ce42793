"""Counted dataset problems: what was wrong, in which file, and what the loader did about it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Every problem kind with the action taken. Kinds marked "image skipped" remove the image from training.
PROBLEM_KINDS: dict[str, str] = {
    "missing_image": "image file not found (image skipped)",
    "unreadable_image": "not a decodable image (image skipped)",
    "truncated_image": "truncated image file (image skipped)",
    "unreadable_label": "label file cannot be read as text (image skipped)",
    "bad_label_row": "label row with a wrong field count or non-numbers (image skipped)",
    "class_out_of_range": "class id outside 0..nc-1 (image skipped)",
    "box_outside_image": "box far outside the image (image skipped)",
    "box_clipped": "box slightly outside the image (clipped)",
    "degenerate_box": "box narrower or lower than 1 px (box dropped)",
    "duplicate_box": "duplicate box (removed)",
    "crowd_box": "COCO crowd region (skipped: not an object box)",
    "converted_image": "greyscale, RGBA, 16-bit or palette image (converted to 8-bit RGB)",
    "missing_label": "no label file (used as a background image)",
    "missing_annotation": "listed in a split file but without its annotation file (image skipped)",
    "unlisted_image": "annotated image in no split list (image skipped)",
    "orphan_annotation": "annotation of an image id that is not among the json's images (annotation skipped)",
    "empty_label": "empty label file (used as a background image)",
}


@dataclass
class ProblemReport:
    """Problems found while reading a dataset: counts per kind and every ``(file, message)`` entry."""

    counts: Counter = field(default_factory=Counter)
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, file, message)

    def add(self, kind: str, file: str, message: str = "") -> None:
        """Record one problem of ``kind`` (a key of ``PROBLEM_KINDS``) in ``file``."""
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"unknown problem kind '{kind}'; known: {', '.join(PROBLEM_KINDS)}")
        self.counts[kind] += 1
        self.entries.append((kind, str(file), message or PROBLEM_KINDS[kind]))

    def extend(self, other: ProblemReport) -> None:
        """Add all problems of ``other``."""
        self.counts.update(other.counts)
        self.entries.extend(other.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def of_kind(self, kind: str) -> list[tuple[str, str]]:
        """``(file, message)`` entries of one kind."""
        return [(f, m) for k, f, m in self.entries if k == kind]

    def summary(self) -> str:
        """One line per problem kind found: count, kind and the action taken."""
        return "\n".join(f"{self.counts[k]:>6} {k}: {PROBLEM_KINDS[k]}" for k in PROBLEM_KINDS if self.counts[k])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"counts": {kind: n}, "entries": [{"kind", "file", "message"}]}``."""
        return {
            "counts": {k: self.counts[k] for k in PROBLEM_KINDS if self.counts[k]},
            "entries": [{"kind": k, "file": f, "message": m} for k, f, m in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProblemReport:
        """Inverse of ``to_dict``."""
        report = cls()
        for e in d.get("entries", []):
            report.add(e["kind"], e["file"], e["message"])
        return report
