"""Annotation readers: every input format becomes a list of ``(video path, class name)`` items.

Formats: the Keras example's CSV (``video_name,tag``), a folder per class (UCF101's layout), and UCF101's
official split files. Labels are class *names* here; the data module maps them to integer ids with the
training split's sorted vocabulary (``class_names``), as the Keras example's StringLookup does.
"""

import csv
import os
import random
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v")
# What operating systems leave beside videos: macOS's AppleDouble "._clip.mp4" and "__MACOSX" (in zips), any dotfile.
HIDDEN_FOLDERS: tuple[str, ...] = ("__MACOSX",)
Item = tuple[str, str | None]  # (video path, class name or None when unlabelled)
# UCF101 names every clip v_<Class>_g<group>_c<clip>; clips of one group come from one long video.
_UCF101_NAME = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c\d+$")


class ManifestError(ValueError):
    """The annotations do not describe a usable dataset; the message lists every offending entry."""


def is_hidden(path: Path) -> bool:
    """A dotfile or dot-folder (``._clip.mp4``, ``.DS_Store``), or a folder a zip tool leaves (``__MACOSX``)."""
    return path.name.startswith(".") or path.name in HIDDEN_FOLDERS


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not is_hidden(path)


def read_csv(csv_path: str | Path, root: str | Path | None = None, labelled: bool = False) -> list[Item]:
    """The Keras example's CSV: a header with ``video_name`` and ``tag`` columns (``path``/``label`` also accepted).
    Relative paths resolve against ``root``, by default the CSV's own folder. ``labelled``: the label column is
    required. A spreadsheet's "CSV UTF-8" (a byte-order mark first) and padded header names read as plain CSV."""
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    try:
        return _read_csv_rows(csv_path, root, labelled)
    except UnicodeDecodeError as error:
        raise ManifestError(f"{csv_path}: not UTF-8 text ({error}); save it as CSV UTF-8") from None
    except csv.Error as error:  # a NUL byte, an unclosed quote at the end of the file
        raise ManifestError(f"{csv_path}: not a readable CSV ({error})") from None


def _read_csv_rows(csv_path: Path, root: Path, labelled: bool) -> list[Item]:
    with csv_path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        fields = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = fields
        path_key = next((k for k in ("video_name", "path") if k in fields), None)
        label_key = next((k for k in ("tag", "label") if k in fields), None)
        if path_key is None:
            raise ManifestError(
                f"{csv_path}: no 'video_name' (or 'path') column; found {fields}. "
                "Expected the Keras example's format: a header line 'video_name,tag'."
            )
        if label_key is None and labelled:
            raise ManifestError(
                f"{csv_path}: no 'tag' (or 'label') column; found {fields}. "
                "Labelled annotations need a header line 'video_name,tag' and a label on every row."
            )
        items = []
        for line, row in enumerate(reader, start=2):
            name = (row.get(path_key) or "").strip()
            if not name:
                raise ManifestError(f"{csv_path}:{line}: empty '{path_key}' field")
            label = (row.get(label_key) or "").strip() or None if label_key else None
            items.append((str(root / name), label))
    return items


def read_class_folders(root: str | Path) -> list[Item]:
    """``root/ClassName/*.avi|mp4|...``: one folder per class, the folder name is the label."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder")
    items = [
        (str(path), class_dir.name)
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p))
        for path in sorted(class_dir.iterdir())
        if is_video(path)  # never a hidden file: macOS's ._clip.mp4 is no video
    ]
    if not items:
        raise ManifestError(f"{root}: no videos found in class sub-folders (expected root/ClassName/*.mp4)")
    return items


def read_ucf101_split(split_file: str | Path, video_root: str | Path) -> list[Item]:
    """UCF101's ``trainlistNN.txt`` (``Class/v_Class_g01_c01.avi 1``) or ``testlistNN.txt`` (path only).
    The label is the folder in the path, so the 1-based ids in trainlists are not needed."""
    split_file, video_root = Path(split_file), Path(video_root)
    items = []
    for line in split_file.read_text().splitlines():  # splitlines also drops the official files' CR
        line = line.strip()
        if not line:
            continue
        relative = line.split()[0]
        if "/" not in relative:
            raise ManifestError(f"{split_file}: line {line!r} has no 'Class/' folder in its path")
        items.append((str(video_root / relative), relative.split("/")[0]))
    return items


def read_class_index(class_ind_file: str | Path) -> list[str]:
    """UCF101's ``classInd.txt`` (``1 ApplyEyeMakeup``), in id order: its ids for ``data.class_names``."""
    pairs = [line.split() for line in Path(class_ind_file).read_text().splitlines() if line.strip()]
    return [name for _, name in sorted(pairs, key=lambda pair: int(pair[0]))]


def read_unlabelled(source: str | Path | Sequence[str | Path]) -> list[Item]:
    """Videos to predict: a file, a list of files, a folder (searched recursively) or a CSV."""
    if isinstance(source, (list, tuple)):
        return [item for entry in source for item in read_unlabelled(entry)]
    path = Path(source)
    if path.suffix.lower() == ".csv":
        return [(video, None) for video, _ in read_csv(path)]
    if path.is_dir():
        videos = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and is_video(p) and not any(map(is_hidden, p.relative_to(path).parents))
        )
        if not videos:
            raise ManifestError(f"{path}: no video files found ({', '.join(VIDEO_EXTENSIONS)})")
        return [(str(p), None) for p in videos]
    return [(str(path), None)]


def read_source(source: str | Path, video_root: str | Path | None = None) -> list[Item]:
    """Dispatch on what ``source`` is: a ``.csv`` file, a ``.txt`` UCF101 split file, or a class folder."""
    path = Path(source)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise ManifestError(f"{path}: annotation CSV not found")
        return without_duplicates(read_csv(path, video_root, labelled=True), path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise ManifestError(f"{path}: split file not found")
        if video_root is None:
            raise ManifestError(f"{path}: a UCF101 split file needs video_root (the folder holding Class/*.avi)")
        return without_duplicates(read_ucf101_split(path, video_root), path)
    if path.is_dir():
        return read_class_folders(path)
    raise ManifestError(f"{path}: not found; expected a CSV file, a UCF101 split .txt file or a class folder")


def without_duplicates(items: Sequence[Item], source: Path) -> list[Item]:
    """Each video once, in its first row's place: a repeated row (same video, same label) is dropped with one
    warning counting them, since it would train twice on the video; a video under two labels is an error."""
    labels: dict[str, str | None] = {}
    kept: list[Item] = []
    conflicts: list[str] = []
    for path, label in items:
        video = os.path.normpath(path)
        if video not in labels:
            labels[video] = label
            kept.append((path, label))
        elif labels[video] != label:
            conflicts.append(f"{path} is labelled both {labels[video]!r} and {label!r}")
    if conflicts:
        shown = "; ".join(conflicts[:5]) + (f" (+{len(conflicts) - 5} more)" if len(conflicts) > 5 else "")
        raise ManifestError(f"{source}: {len(conflicts)} video(s) under two labels; keep one row each: {shown}")
    if len(kept) < len(items):
        warnings.warn(
            f"{source}: dropped {len(items) - len(kept)} duplicate row(s) (the same video and label again)",
            stacklevel=3,
        )
    return kept


def class_names_from(items: Iterable[Item]) -> list[str]:
    """The label vocabulary: sorted unique labels of the training items."""
    return sorted({label for _, label in items if label is not None})


def group_of(path: str) -> str:
    """Clips that must stay on one side of a split: UCF101's ``v_Class_gNN`` group, else the file itself."""
    stem = Path(path).stem
    match = _UCF101_NAME.match(stem)
    return f"{match['cls']}_g{match['group']}" if match else str(path)


def split_train_val(items: Sequence[Item], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Stratified, seeded, group-aware train/validation split.

    Per class, whole groups are shuffled and moved to validation until it holds ``val_fraction`` of the
    class's clips (at least one group when the class has two or more). Unlike Keras' ``validation_split``
    (the last rows, unshuffled) every class is represented, and no UCF101 group is on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    groups_by_class: dict[str | None, dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
    group_class: dict[str, str | None] = {}
    for item in items:
        group = group_of(item[0])
        owner = group_class.setdefault(group, item[1])  # a group belongs to the class it first appears in
        groups_by_class[owner][group].append(item)
    rng = random.Random(seed)
    train: list[Item] = []
    val: list[Item] = []
    for label in sorted(groups_by_class, key=str):
        groups = [groups_by_class[label][g] for g in sorted(groups_by_class[label])]
        rng.shuffle(groups)
        target = val_fraction * sum(len(g) for g in groups)
        taken = 0
        for index, group in enumerate(groups):
            keep_one_for_train = index == len(groups) - 1
            if (taken < target or index == 0) and not keep_one_for_train:
                val.extend(group)
                taken += len(group)
            else:
                train.extend(group)
    return sorted(train), sorted(val)


def check_same_classes(class_names: Sequence[str], data_classes: Sequence[str], source: str) -> None:
    """The labels of ``source`` must be exactly ``class_names`` (a checkpoint's, when one is evaluated): label
    ids are positions in ``class_names``, and data labelled with other names would be scored wrong."""
    if set(class_names) == set(data_classes):
        return
    only_given = sorted(set(class_names) - set(data_classes))
    only_data = sorted(set(data_classes) - set(class_names))
    details = [f"only in the checkpoint / data.class_names: {only_given}"] if only_given else []
    details += [f"only in {source}: {only_data}"] if only_data else []
    raise ManifestError(
        f"data.class_names (as given, or a --ckpt_path checkpoint's) differ from the labels of {source}: give the "
        f"data's classes, or evaluate the checkpoint on data with its classes ({'; '.join(details)})"
    )


def check_manifest(
    splits: dict[str, list[Item]], class_names: Sequence[str], on_missing: str = "raise"
) -> dict[str, list[Item]]:
    """Validate every split before any training and return them with missing files dropped (``skip``).

    Errors, all listed at once: files that do not exist (unless ``on_missing="skip"``, which drops and
    reports them), evaluation labels never seen in training, and classes with no training video.
    """
    problems: list[str] = []
    checked: dict[str, list[Item]] = {}
    known = set(class_names)
    for split, items in splits.items():
        missing = [path for path, _ in items if not Path(path).is_file()]
        if missing and on_missing == "skip":
            shown = "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
            warnings.warn(
                f"{split}: skipping {len(missing)} of {len(items)} listed videos that do not exist:\n  {shown}",
                stacklevel=2,
            )
        else:
            problems += [f"{split}: file not found: {path}" for path in missing]
        missing_set = set(missing)
        checked[split] = [item for item in items if item[0] not in missing_set]
        if split != "predict":
            problems += [f"{split}: video without a label: {path}" for path, label in checked[split] if label is None]
        if split != "train":
            unseen = sorted({label for _, label in checked[split] if label is not None and label not in known})
            problems += [f"{split}: label {label!r} does not occur in the training data" for label in unseen]
    if "train" in checked:
        present = {label for _, label in checked["train"]}
        problems += [f"train: class {name!r} has no training video" for name in class_names if name not in present]
    if problems:
        raise ManifestError(
            f"{len(problems)} problem(s) in the dataset annotations; fix or remove these entries "
            "(or pass on_error='skip' to drop missing files):\n  " + "\n  ".join(problems)
        )
    return checked
