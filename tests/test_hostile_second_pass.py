"""Issue 22: hostile input, second pass. Each test is named after the issue's item.

Escape tests hash the tree around the folder before and after: nothing outside may change.
A b0 with 2 classes at 32 px (or a one-stage spec) keeps them fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

from effnet.cli import main
from tests.test_hostile_input import _one_line as one_line
from tests.test_hostile_input import cat_dog  # noqa: F401 (a fixture)

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import make_image_folder  # noqa: E402


def tree_hash(root: Path) -> dict[str, str]:
    """Every entry under `root` (not following links): its kind and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _train_args(tmp_path: Path, run: Path) -> list[str]:
    if not (tmp_path / "d").exists():
        make_image_folder(tmp_path / "d", classes=2, per_class=3)
    return ["train", "--model", "b0", "--dataset", "imagefolder", "--data", str(tmp_path / "d"),
            "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--no-progress",
            "--workers", "0", "--threads", "1", "--output", str(run)]


def _fake_run(run: Path, keep: Path) -> None:
    """A run folder (last.pt, metrics, best/) whose final/ is a link to a user's folder."""
    keep.mkdir()
    (keep / "model.safetensors").write_text("precious")
    (keep / ".model.safetensors.1.abcd1234.tmp").write_text("not ours either")
    (run / "best").mkdir(parents=True)
    for name in ("last.pt", "metrics.csv", "summary.json", "best/model.safetensors"):
        (run / name).write_text("old run")
    (run / "final").symlink_to(keep, target_is_directory=True)


def _linked_run(tmp_path: Path) -> tuple[Path, list[str], dict[str, str]]:
    run = tmp_path / "run"
    _fake_run(run, tmp_path / "keep")
    args = _train_args(tmp_path, run)
    return run, args, tree_hash(tmp_path)


# ---------------------------------------------------------------- 1
def test_1_resume_never_writes_through_a_linked_final(tmp_path, capsys):
    run, args, before = _linked_run(tmp_path)
    assert main([*args, "--resume"]) == 2
    one_line(capsys, rf"{re.escape(str(run / 'final'))} is a symbolic link")
    assert tree_hash(tmp_path) == before


def test_1_a_linked_file_inside_best_is_refused_too(tmp_path, capsys):
    run = tmp_path / "run"
    (tmp_path / "outside.json").write_text("{}")
    (run / "best").mkdir(parents=True)
    (run / "last.pt").write_text("old run")
    (run / "best" / "config.json").symlink_to(tmp_path / "outside.json")
    args = _train_args(tmp_path, run)
    before = tree_hash(tmp_path)
    assert main([*args, "--resume"]) == 2
    one_line(capsys, r"best/config\.json is a symbolic link")
    assert tree_hash(tmp_path) == before


# ---------------------------------------------------------------- 6
def test_6_force_checks_for_links_before_deleting_anything(tmp_path, capsys):
    run, args, before = _linked_run(tmp_path)
    assert main([*args, "--force"]) == 2
    one_line(capsys, r"final is a symbolic link")
    assert tree_hash(tmp_path) == before  # last.pt, metrics.csv, summary.json all kept
