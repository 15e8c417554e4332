"""Data inspection: counts, skips, report and class-balance PNG (mask_keras.data.inspect)."""
from __future__ import annotations

import pytest
from _layout_factory import make_layout, stratified_people
from PIL import Image

from mask_keras import labels as L
from mask_keras.data import LayoutError
from mask_keras.data.inspect import format_report, inspect

#: people per (gender, age_group): 3 young men, 2 middle men, 1 old man, 4/1/2 women
GROUPS = {("male", 0): 3, ("male", 1): 2, ("male", 2): 1, ("female", 0): 4, ("female", 1): 1, ("female", 2): 2}


@pytest.fixture
def layout(tmp_path):
    people = stratified_people(GROUPS) + [("001498-1", "male", 45)]  # + one middle man, relabeled later
    return make_layout(tmp_path / "data", people, ext={"000001": ".png", "000002": ".jpeg"},
                       mask5_jpg=("000002",), hidden=True, n_eval=3, size=(6, 4))


def expected_classes(groups):
    """Images per class from people per group: mask state x 5/1/1 images per person."""
    out = {c: 0 for c in range(L.NUM_CLASSES)}
    for (g, a), n in groups.items():
        for m, per_person in ((0, 5), (1, 1), (2, 1)):
            out[L.encode(m, L.GENDER_NAMES[g], a)] += n * per_person
    return out


def test_inspect_counts(layout):
    d = inspect(layout.root, out_png=False)
    groups = dict(GROUPS)
    groups[("male", 1)] += 1
    n_people = sum(groups.values())
    assert d["people"] == n_people == 14
    assert d["images"] == 7 * n_people
    assert d["classes"] == expected_classes(groups)
    assert sum(d["classes"].values()) == d["images"]
    assert d["mask"] == {"wear": 5 * n_people, "incorrect": n_people, "not_wear": n_people}
    assert d["gender"] == {"male": 7 * 7, "female": 7 * 7}
    assert d["age_group"] == {"<30": 7 * 7, "30-59": 7 * 4, ">=60": 7 * 3}
    assert d["people_by_group"] == {"male/<30": 3, "male/30-59": 3, "male/>=60": 1,
                                    "female/<30": 4, "female/30-59": 1, "female/>=60": 2}
    assert d["extensions"] == {".jpeg": 6, ".jpg": 7 * 12 + 1, ".png": 7}
    assert d["skipped"] == [] and d["relabeled"] == []
    assert d["eval"] == {"images": 3, "skipped": []}


def test_inspect_png_default_and_given(layout, tmp_path):
    d = inspect(layout.root)
    png = layout.root / "class_balance.png"
    assert d["png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
    other = tmp_path / "out" / "balance.png"
    assert inspect(layout.root, out_png=other)["png"] == str(other)
    with Image.open(other) as im:
        assert im.format == "PNG"
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind
    png.unlink()
    assert inspect(layout.root, out_png=False)["png"] is None
    assert not png.exists()


def test_inspect_relabel_and_age_upper(layout):
    d = inspect(layout.root, out_png=False, relabel="certain")
    assert d["relabeled"] == ["001498-1"]
    assert d["people_by_group"]["male/30-59"] == 2 and d["people_by_group"]["female/30-59"] == 2
    assert d["gender"] == {"male": 7 * 6, "female": 7 * 8}
    # every middle-aged person of stratified_people is 30..31; with upper=31 the 31-year-olds move to >=60
    d31 = inspect(layout.root, out_png=False, age_upper=31)
    assert d31["age_upper"] == 31
    assert d31["age_group"][">=60"] > 7 * 3


def test_inspect_counts_skips(layout):
    layout.remove_image("000003", "normal")
    layout.add_row("000777", "female", 33)
    layout.remove_eval_image(0)
    d = inspect(layout.root, out_png=False)
    assert len(d["skipped"]) == 2
    assert d["people"] == 13 and d["images"] == 91
    assert sum(d["classes"].values()) == 91
    assert d["eval"]["images"] == 2 and len(d["eval"]["skipped"]) == 1
    text = format_report(d)
    assert "skipped: 2" in text and "000777_female_Asian_33" in text and "missing image(s) ['normal']" in text
    assert "eval images: 2   skipped: 1" in text
    with pytest.raises(LayoutError):
        inspect(layout.root, out_png=False, on_error="raise")


def test_inspect_without_eval(tmp_path):
    lay = make_layout(tmp_path / "d", stratified_people(1), n_eval=0, size=(4, 4))
    d = inspect(lay.root, out_png=False)
    assert d["eval"] is None
    assert "eval: none" in format_report(d)


def test_format_report(layout):
    d = inspect(layout.root, out_png=False, relabel="certain")
    text = format_report(d)
    assert "people: 14   images: 98" in text
    assert "relabeled people: 1 (001498-1)" in text
    assert "wear" in text and "incorrect" in text and "not_wear" in text
    # 18 class lines, each with its name and count
    for c, n in d["classes"].items():
        assert f"{c:>2} {L.class_name(c):<26}{n:>7d}" in text
    assert "  male    " in text and "  female  " in text
    assert "file extensions: .jpeg 6, .jpg 85, .png 7" in text
    assert "skipped: 0" in text
