"""Tiny on-disk layouts in the competition format, for tests.

``make_layout(root, people)`` writes a minimal *valid* layout::

    root/train/train.csv                          id,gender,race,age,path
    root/train/images/<id>_<gender>_Asian_<age>/  mask1..mask5, incorrect_mask, normal
    root/eval/info.csv                            ImageID,ans
    root/eval/images/<ImageID>.jpg

Images are small solid-colour JPEGs (PNGs for ``.png`` folders) whose colour encodes
the mask state (``MASK_COLORS``), so a test can check that an image travelled with
its label. The real set's quirks are opt-in keyword arguments; errors are injected
afterwards with the :class:`Layout` methods (``remove_image``, ``drop_row`` ...), each
of which returns the path a good error message should name.

Example::

    lay = make_layout(tmp_path, [("000001", "female", 45), ("001498-1", "male", 60)],
                      ext={"000001": ".png"}, hidden=True)
    lay.remove_image("000001", "normal")
    with pytest.raises(LayoutError, match="normal"):
        read_train(lay.root)
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mask_keras import labels as L

#: the seven image stems of a person folder, in the order they are written
STEMS = tuple(L.MASK_STEMS)
#: solid RGB colour per mask state (0 wear, 1 incorrect, 2 not worn); far apart so JPEG keeps them apart
MASK_COLORS = {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200)}

#: a small default population: both genders, all three age groups, a suffixed id
DEFAULT_PEOPLE = (
    ("000001", "female", 25),
    ("000002", "male", 29),
    ("000003", "female", 30),
    ("000004", "male", 45),
    ("000005", "female", 59),
    ("000006", "male", 60),
    ("001498-1", "male", 45),
    ("000007", "female", 60),
)


def profile_name(pid: str, gender: str, age: int, race: str = "Asian") -> str:
    """The folder name of a person: ``<id>_<gender>_<race>_<age>``."""
    return f"{pid}_{gender}_{race}_{age}"


def write_image(path, color=(128, 128, 128), size=(16, 12)) -> Path:
    """A solid-colour image of ``size`` = (height, width); PNG for ``.png``, else JPEG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (size[1], size[0]), color).save(path, format=fmt)
    return path


@dataclass
class Layout:
    """A layout written by :func:`make_layout`, with helpers that break it on purpose."""

    root: Path
    people: list = field(default_factory=list)  # [(id, gender, age), ...] as written
    ext: dict = field(default_factory=dict)  # id -> extension of that folder
    eval_ids: list = field(default_factory=list)  # ImageIDs in info.csv order
    size: tuple = (16, 12)

    # ---- paths -------------------------------------------------------------
    @property
    def train_csv(self) -> Path:
        return self.root / "train" / "train.csv"

    @property
    def images(self) -> Path:
        return self.root / "train" / "images"

    @property
    def info_csv(self) -> Path:
        return self.root / "eval" / "info.csv"

    @property
    def eval_images(self) -> Path:
        return self.root / "eval" / "images"

    def person(self, pid: str) -> tuple:
        for p in self.people:
            if p[0] == pid:
                return p
        raise KeyError(f"no person {pid!r} in this layout")

    def profile(self, pid: str) -> str:
        """Folder name of person ``pid``."""
        i, g, a = self.person(pid)
        return profile_name(i, g, a)

    def folder(self, pid: str) -> Path:
        return self.images / self.profile(pid)

    def image(self, pid: str, stem: str) -> Path:
        """The file of one image (whatever its extension)."""
        hits = [p for p in self.folder(pid).iterdir() if p.stem == stem and not p.name.startswith(".")]
        if len(hits) != 1:
            raise KeyError(f"{self.folder(pid)}: {len(hits)} files with stem {stem!r}")
        return hits[0]

    # ---- CSV helpers -------------------------------------------------------
    def read_rows(self) -> list[dict]:
        with open(self.train_csv, newline="") as f:
            return list(csv.DictReader(f))

    def write_rows(self, rows: list[dict], columns=("id", "gender", "race", "age", "path")) -> Path:
        _write_csv(self.train_csv, columns, [[r.get(c, "") for c in columns] for r in rows])
        return self.train_csv

    # ---- injected errors (each returns the path the error should name) -----
    def remove_image(self, pid: str, stem: str) -> Path:
        """Delete one of the 7 images: the folder is then incomplete."""
        p = self.image(pid, stem)
        p.unlink()
        return self.folder(pid)

    def add_duplicate(self, pid: str, stem: str = "mask1", ext: str = ".png") -> Path:
        """Add a second file for ``stem`` with another extension (e.g. mask1.jpg + mask1.png)."""
        write_image(self.folder(pid) / f"{stem}{ext}", MASK_COLORS[int(L.MASK_STEMS[stem])], self.size)
        return self.folder(pid)

    def add_unexpected_file(self, pid: str, name: str = "notes.txt") -> Path:
        p = self.folder(pid) / name
        p.write_text("not an image")
        return p

    def empty_image(self, pid: str, stem: str = "mask2") -> Path:
        p = self.image(pid, stem)
        p.write_bytes(b"")
        return p

    def drop_row(self, pid: str) -> Path:
        """Remove the train.csv row of ``pid``: its folder then has no row."""
        name = self.profile(pid)
        self.write_rows([r for r in self.read_rows() if r["path"] != name])
        return self.folder(pid)

    def add_row(self, pid: str, gender: str, age: int, path: str | None = None) -> str:
        """Append a train.csv row (by default for a folder that does not exist); returns its path value."""
        path = path or profile_name(pid, gender, age)
        rows = self.read_rows() + [{"id": pid, "gender": gender, "race": "Asian", "age": str(age), "path": path}]
        self.write_rows(rows)
        return path

    def edit_row(self, pid: str, **values) -> Path:
        """Change fields of the row of ``pid`` (e.g. ``age="44"``) so it disagrees with its folder."""
        name = self.profile(pid)
        rows = self.read_rows()
        for r in rows:
            if r["path"] == name:
                r.update({k: str(v) for k, v in values.items()})
        self.write_rows(rows)
        return self.train_csv

    def add_folder(self, name: str, stems=STEMS, ext: str = ".jpg", row: bool = False) -> Path:
        """A person folder with any name (e.g. one that does not parse); optionally listed in train.csv."""
        folder = self.images / name
        for s in stems:
            write_image(folder / f"{s}{ext}", MASK_COLORS[int(L.MASK_STEMS[s])], self.size)
        if row:
            rows = self.read_rows() + [{"id": name.split("_")[0], "gender": "female", "race": "Asian",
                                        "age": "30", "path": name}]
            self.write_rows(rows)
        return folder

    def set_columns(self, columns) -> Path:
        """Rewrite train.csv with other columns (values kept by name, blank when new)."""
        self.write_rows(self.read_rows(), columns=tuple(columns))
        return self.train_csv

    def remove_eval_image(self, i: int = 0) -> Path:
        """Delete the i-th eval image (it stays listed in info.csv)."""
        p = self.eval_images / self.eval_ids[i]
        p.unlink()
        return p


def _write_csv(path: Path, columns, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)


def make_layout(root, people=DEFAULT_PEOPLE, *, ext: dict | None = None, mask5_jpg=(), hidden: bool = False,
                n_eval: int = 4, size=(16, 12), csv_order: str = "sorted") -> Layout:
    """Write a valid layout under ``root`` and return a :class:`Layout`.

    people: ``[(id, gender, age), ...]``; ids may carry a suffix (``001498-1``).
    ext: per-id folder extension (``".jpg"`` default, ``".jpeg"``, ``".png"``).
    mask5_jpg: ids of ``.jpeg`` folders whose ``mask5`` is ``.jpg`` (a real quirk).
    hidden: add macOS ``._*`` resource forks (beside images, and beside folders) and a ``.DS_Store``.
    n_eval: number of eval images (0: no ``eval/`` at all).
    csv_order: "sorted" (by folder name), "reversed" or "given" row order of train.csv.
    """
    root = Path(root)
    ext = dict(ext or {})
    people = [(str(i), str(g), int(a)) for i, g, a in people]
    ids = [p[0] for p in people]
    if len(set(ids)) != len(ids):
        raise ValueError(f"make_layout: duplicate ids in {ids}")
    images = root / "train" / "images"
    rows = []
    for pid, gender, age in people:
        e = ext.get(pid, ".jpg")
        folder = images / profile_name(pid, gender, age)
        for stem in STEMS:
            se = ".jpg" if (stem == "mask5" and pid in mask5_jpg) else e
            write_image(folder / f"{stem}{se}", MASK_COLORS[int(L.MASK_STEMS[stem])], size)
            if hidden:
                (folder / f"._{stem}{se}").write_bytes(b"\x00\x05\x16\x07resource fork")
        if hidden:
            (images / f"._{folder.name}").write_bytes(b"\x00\x05\x16\x07")
        rows.append([pid, gender, "Asian", str(age), folder.name])
    if hidden:
        (images / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    if csv_order == "sorted":
        rows.sort(key=lambda r: r[4])
    elif csv_order == "reversed":
        rows.sort(key=lambda r: r[4], reverse=True)
    elif csv_order != "given":
        raise ValueError(f"csv_order must be sorted|reversed|given, got {csv_order!r}")
    _write_csv(root / "train" / "train.csv", ("id", "gender", "race", "age", "path"), rows)

    eval_ids = []
    if n_eval:
        for i in range(n_eval):
            image_id = hashlib.sha1(f"eval-{i}".encode()).hexdigest()[:16] + ".jpg"
            write_image(root / "eval" / "images" / image_id, MASK_COLORS[i % 3], size)
            eval_ids.append(image_id)
        _write_csv(root / "eval" / "info.csv", ("ImageID", "ans"), [[i, 0] for i in eval_ids])
    return Layout(root=root, people=people, ext={p: ext.get(p, ".jpg") for p in ids}, eval_ids=eval_ids,
                  size=tuple(size))


def stratified_people(n_per_group: dict | int = 4, start: int = 1, ages=None) -> list[tuple[str, str, int]]:
    """People spread over gender x age group: ``{(gender, age_group): n}`` or n for every group.

    Ages are picked from ``ages`` per group (default 20..29, 30..59, 60) cycling, ids count up
    from ``start`` as six digits.
    """
    ages = ages or {0: list(range(18, 30)), 1: list(range(30, 60)), 2: [60]}
    if isinstance(n_per_group, int):
        n_per_group = {(g, a): n_per_group for g in ("male", "female") for a in (0, 1, 2)}
    out, k = [], start
    for (g, a), n in sorted(n_per_group.items()):
        for j in range(n):
            out.append((f"{k:06d}", g, ages[a][j % len(ages[a])]))
            k += 1
    return out
