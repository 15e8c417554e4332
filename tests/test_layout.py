"""Reading the competition layout (mask_keras.data.layout) and relabeling (mask_keras.data.relabel)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from _layout_factory import DEFAULT_PEOPLE, STEMS, make_layout, profile_name

from mask_keras import labels as L
from mask_keras.data import LayoutError, read_eval, read_train
from mask_keras.data.layout import TRAIN_COLUMNS, parse_profile
from mask_keras.data.relabel import apply_relabel, load_relabel

SIZE = (4, 4)


def make(tmp_path, people=DEFAULT_PEOPLE, **kw):
    kw.setdefault("size", SIZE)
    return make_layout(tmp_path / "data", people, **kw)


# ---- the valid layout and its quirks ---------------------------------------------------------

def test_valid_layout_table(tmp_path):
    lay = make(tmp_path)
    t = read_train(lay.root)
    assert list(t.columns) == TRAIN_COLUMNS
    assert len(t) == 7 * len(DEFAULT_PEOPLE)
    assert t.attrs["skipped"] == [] and t.attrs["age_upper"] == 60
    assert list(t.index) == list(range(len(t)))
    assert (t.groupby("profile").size() == 7).all()
    assert t["profile"].is_monotonic_increasing
    for pid, g, a in DEFAULT_PEOPLE:
        rows = t[t["id"] == pid]
        assert set(rows["profile"]) == {profile_name(pid, g, a)}
        assert set(rows["stem"]) == set(STEMS)
        assert (rows["gender"] == L.GENDER_NAMES[g]).all() and (rows["age"] == a).all()
        assert (rows["race"] == "Asian").all()
    for _, r in t.iterrows():
        assert r["mask"] == L.MASK_STEMS[r["stem"]]
        assert r["path"].startswith(str(lay.images / r["profile"]))
    assert t["age"].dtype == np.int64 and t["label"].dtype == np.int64
    # mask counts 5:1:1
    assert t["mask"].value_counts().to_dict() == {0: 5 * len(DEFAULT_PEOPLE), 1: len(DEFAULT_PEOPLE),
                                                  2: len(DEFAULT_PEOPLE)}


def test_label_encoding(tmp_path):
    lay = make(tmp_path)
    t = read_train(lay.root)
    np.testing.assert_array_equal(t["label"], t["mask"] * 6 + t["gender"] * 3 + t["age_group"])
    np.testing.assert_array_equal(t["age_group"], np.select([t["age"] >= 60, t["age"] >= 30], [2, 1], 0))
    m, g, a = L.decode(t["label"].to_numpy())
    np.testing.assert_array_equal(m, t["mask"])
    np.testing.assert_array_equal(g, t["gender"])
    np.testing.assert_array_equal(a, t["age_group"])
    # spot checks: (female, 25) normal -> 2*6+1*3+0 = 15; (male, 60) mask1 -> 0+0+2 = 2
    row = t[(t["id"] == "000001") & (t["stem"] == "normal")].iloc[0]
    assert row["label"] == 15
    row = t[(t["id"] == "000006") & (t["stem"] == "mask1")].iloc[0]
    assert row["label"] == 2


@pytest.mark.parametrize("upper,expect", [(60, {29: 0, 30: 1, 57: 1, 58: 1, 59: 1, 60: 2}),
                                          (58, {29: 0, 30: 1, 57: 1, 58: 2, 59: 2, 60: 2})])
def test_age_upper(tmp_path, upper, expect):
    people = [(f"{i:06d}", "female", age) for i, age in enumerate(expect, start=1)]
    lay = make(tmp_path, people)
    t = read_train(lay.root, age_upper=upper)
    assert t.attrs["age_upper"] == upper
    got = t.groupby("age")["age_group"].first().to_dict()
    assert got == expect
    assert (t["label"] == t["mask"] * 6 + 3 + t["age_group"]).all()


def test_mixed_extensions_mask5_jpg_hidden_and_suffixed_ids(tmp_path):
    people = [("000001", "female", 25), ("000002", "male", 45), ("000003", "female", 60),
              ("001498-1", "male", 45), ("001774-2", "female", 33)]
    lay = make(tmp_path, people, ext={"000002": ".png", "000003": ".jpeg", "001774-2": ".jpeg"},
               mask5_jpg=("000003",), hidden=True)
    # hidden files really are there, beside images and beside folders
    assert (lay.folder("000001") / "._mask1.jpg").exists()
    assert (lay.images / f"._{lay.profile('000001')}").exists()
    t = read_train(lay.root)
    assert len(t) == 35 and t.attrs["skipped"] == []
    assert not t["path"].str.contains("/._").any()
    ext = t.assign(ext=t["path"].str.rsplit(".", n=1).str[-1]).set_index(["id", "stem"])["ext"]
    assert set(ext.loc["000001"]) == {"jpg"}
    assert set(ext.loc["000002"]) == {"png"}
    assert ext.loc[("000003", "mask5")] == "jpg"
    assert set(ext.loc["000003"].drop("mask5")) == {"jpeg"}
    assert set(ext.loc["001774-2"]) == {"jpeg"}
    assert set(t["id"]) == {p[0] for p in people}
    assert t[t["id"] == "001498-1"]["profile"].iloc[0] == "001498-1_male_Asian_45"


def test_parse_profile():
    assert parse_profile("001498-1_male_Asian_45") == {"id": "001498-1", "gender": "male", "race": "Asian",
                                                       "age": 45}
    assert parse_profile("000001_female_Asian_18")["age"] == 18
    for bad in ("1498_male_Asian_45", "000001_man_Asian_45", "000001_male_Asian", "000001_male_Asian_x",
                "000001-_male_Asian_45", "000001_Male_Asian_45"):
        with pytest.raises(LayoutError, match="does not parse"):
            parse_profile(bad)


def test_row_order_of_train_csv_does_not_matter(tmp_path):
    a = read_train(make_layout(tmp_path / "a", DEFAULT_PEOPLE, size=SIZE, csv_order="sorted").root)
    b = read_train(make_layout(tmp_path / "b", DEFAULT_PEOPLE, size=SIZE, csv_order="reversed").root)
    cols = [c for c in TRAIN_COLUMNS if c != "path"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


# ---- bad input: each case raises naming the path, or is a counted skip ----------------------

def _row_disagrees(lay):
    lay.edit_row("000001", age=26)
    return lay.profile("000001"), lay.profile("000001")


def _age_not_integer(lay):
    lay.edit_row("000001", age="x")
    return lay.profile("000001"), lay.profile("000001")


#: name -> (break the layout, returning (what the message must name, the profile that drops out), message regex)
CASES = {
    "unparsable_folder_listed": (lambda lay: (lay.add_folder("bad-name_female_Asian_30", row=True).name, None),
                                 "does not parse"),
    "folder_missing_image": (lambda lay: (lay.remove_image("000003", "incorrect_mask"), lay.profile("000003")),
                             r"missing image\(s\) \['incorrect_mask'\]"),
    "duplicate_stem": (lambda lay: (lay.add_duplicate("000004", "mask1", ".png"), lay.profile("000004")),
                       "duplicate image stem 'mask1'"),
    "unexpected_file": (lambda lay: (lay.add_unexpected_file("000005"), lay.profile("000005")), "unexpected file"),
    "empty_image": (lambda lay: (lay.empty_image("000006"), lay.profile("000006")), "empty file"),
    "row_without_folder": (lambda lay: (lay.add_row("000099", "female", 33), None), "no folder"),
    "folder_without_row": (lambda lay: (lay.drop_row("000002"), lay.profile("000002")), "no row in train.csv"),
    "row_disagrees_with_folder": (_row_disagrees, "make them agree"),
    "age_not_integer": (_age_not_integer, "not an integer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_naming_the_path(tmp_path, case):
    lay = make(tmp_path)
    brk, pattern = CASES[case]
    where, _ = brk(lay)
    with pytest.raises(LayoutError, match=pattern) as e:
        read_train(lay.root)
    assert str(where) in str(e.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_skip_is_counted(tmp_path, case, caplog):
    lay = make(tmp_path)
    brk, pattern = CASES[case]
    where, gone = brk(lay)
    with caplog.at_level(logging.WARNING, logger="mask_keras.data.layout"):
        t = read_train(lay.root, on_error="skip")
    skipped = t.attrs["skipped"]
    assert len(skipped) == 1
    path, reason = skipped[0]
    assert str(where) in path + reason
    assert pd.Series([reason]).str.contains(pattern).all()
    assert "skipped 1 train people" in caplog.text
    expect = {profile_name(*p) for p in DEFAULT_PEOPLE} - {gone}
    assert set(t["profile"]) == expect
    assert len(t) == 7 * len(expect)


def test_several_skips_counted_together(tmp_path):
    lay = make(tmp_path)
    lay.remove_image("000001", "mask2")
    lay.add_duplicate("000002", "normal", ".jpeg")
    lay.add_row("000099", "male", 70)
    lay.drop_row("000003")
    t = read_train(lay.root, on_error="skip")
    assert len(t.attrs["skipped"]) == 4
    assert t["profile"].nunique() == len(DEFAULT_PEOPLE) - 3


def test_unparsable_folder_without_row(tmp_path):
    lay = make(tmp_path)
    folder = lay.add_folder("not_a_person")
    with pytest.raises(LayoutError) as e:
        read_train(lay.root)
    assert str(folder) in str(e.value)
    t = read_train(lay.root, on_error="skip")
    assert [p for p, _ in t.attrs["skipped"]] == [str(folder)]


@pytest.mark.parametrize("columns", [("id", "gender", "race", "age"), ("ID", "gender", "race", "age", "path"),
                                     ("path",)])
def test_train_csv_wrong_columns(tmp_path, columns):
    lay = make(tmp_path)
    lay.set_columns(columns)
    for on_error in ("raise", "skip"):  # not a per-person problem: always an error
        with pytest.raises(LayoutError, match=r"lacks column\(s\)") as e:
            read_train(lay.root, on_error=on_error)
        assert str(lay.train_csv) in str(e.value)


def test_missing_train_csv_and_images(tmp_path):
    lay = make(tmp_path)
    lay.train_csv.unlink()
    with pytest.raises(LayoutError, match="train.csv not found") as e:
        read_train(lay.root)
    assert str(lay.train_csv) in str(e.value)
    with pytest.raises(LayoutError, match="not found"):
        read_train(tmp_path / "nowhere")


def test_images_dir_missing(tmp_path):
    lay = make(tmp_path)
    import shutil

    shutil.rmtree(lay.images)
    with pytest.raises(LayoutError, match="image folder not found") as e:
        read_train(lay.root)
    assert str(lay.images) in str(e.value)


def test_stray_file_beside_folders(tmp_path):
    lay = make(tmp_path)
    (lay.images / "readme.txt").write_text("x")
    with pytest.raises(LayoutError, match="readme.txt") as e:
        read_train(lay.root)
    assert str(lay.images) in str(e.value)


def test_duplicate_row_in_train_csv(tmp_path):
    lay = make(tmp_path)
    pid, g, a = DEFAULT_PEOPLE[0]
    lay.add_row(pid, g, a)  # the same folder listed twice
    with pytest.raises(LayoutError, match="listed twice"):
        read_train(lay.root)


def test_all_people_skipped_is_an_error(tmp_path):
    lay = make(tmp_path, DEFAULT_PEOPLE[:1])
    lay.remove_image(DEFAULT_PEOPLE[0][0], "mask1")
    with pytest.raises(LayoutError, match="no usable people"):
        read_train(lay.root, on_error="skip")


def test_on_error_value_checked(tmp_path):
    lay = make(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        read_train(lay.root, on_error="ignore")
    with pytest.raises(ValueError, match="on_error"):
        read_eval(lay.root, on_error="warn")


# ---- eval -----------------------------------------------------------------------------------

def test_read_eval(tmp_path):
    lay = make(tmp_path, n_eval=5)
    (lay.eval_images / "._x.jpg").write_bytes(b"\x00")  # hidden file, not listed: ignored
    e = read_eval(lay.root)
    assert list(e.columns) == ["ImageID", "path"]
    assert list(e["ImageID"]) == lay.eval_ids  # info.csv order
    assert list(e["path"]) == [str(lay.eval_images / i) for i in lay.eval_ids]
    assert e.attrs["skipped"] == []


def test_eval_image_missing(tmp_path, caplog):
    lay = make(tmp_path, n_eval=4)
    gone = lay.remove_eval_image(2)
    with pytest.raises(LayoutError, match="missing") as e:
        read_eval(lay.root)
    assert str(gone) in str(e.value) and str(lay.info_csv) in str(e.value)
    with caplog.at_level(logging.WARNING, logger="mask_keras.data.layout"):
        t = read_eval(lay.root, on_error="skip")
    assert [p for p, _ in t.attrs["skipped"]] == [str(gone)]
    assert list(t["ImageID"]) == [i for k, i in enumerate(lay.eval_ids) if k != 2]
    assert "skipped 1 eval images" in caplog.text


def test_eval_bad_info_csv(tmp_path):
    lay = make(tmp_path, n_eval=2)
    lay.info_csv.write_text("image,ans\na.jpg,0\n")
    with pytest.raises(LayoutError, match=r"lacks column\(s\) \['ImageID'\]") as e:
        read_eval(lay.root)
    assert str(lay.info_csv) in str(e.value)
    lay.info_csv.write_text(f"ImageID,ans\n{lay.eval_ids[0]},0\n{lay.eval_ids[0]},0\n")
    with pytest.raises(LayoutError, match="listed twice"):
        read_eval(lay.root)


def test_eval_absent(tmp_path):
    lay = make(tmp_path, n_eval=0)
    with pytest.raises(LayoutError, match="info.csv not found"):
        read_eval(lay.root)


# ---- relabel --------------------------------------------------------------------------------

RELABEL_PEOPLE = [
    ("000020", "female", 25),  # certain: swap incorrect_mask <-> normal
    ("001498-1", "male", 45),  # certain: male -> female
    ("001720", "female", 33),  # certain: female -> male
    ("004348", "male", 59),  # certain: age 59 -> 60
    ("000225", "female", 40),  # uncertain: female -> male
    ("001009", "male", 30),  # uncertain: age -> 29
    ("000001", "female", 50),  # untouched
]


def _person(t, pid):
    return t[t["id"] == pid].set_index("stem")


def test_relabel_certain(tmp_path):
    lay = make(tmp_path, RELABEL_PEOPLE)
    raw = read_train(lay.root)
    fixed = read_train(lay.root, relabel=True)
    assert read_train(lay.root, relabel="certain").equals(fixed)
    assert sorted(fixed.attrs["relabeled"]) == ["000020", "001498-1", "001720", "004348"]
    # 000020: the image files stay, their mask labels swap
    r, f = _person(raw, "000020"), _person(fixed, "000020")
    assert (r.loc["incorrect_mask", "mask"], r.loc["normal", "mask"]) == (1, 2)
    assert (f.loc["incorrect_mask", "mask"], f.loc["normal", "mask"]) == (2, 1)
    assert f.loc["incorrect_mask", "path"] == r.loc["incorrect_mask", "path"]
    assert f.loc["normal", "label"] == 1 * 6 + 1 * 3 + 0
    assert (f.drop(["incorrect_mask", "normal"])["mask"] == 0).all()
    # 001498-1 male -> female; 001720 female -> male; labels recomputed
    assert (_person(raw, "001498-1")["gender"] == 0).all() and (_person(fixed, "001498-1")["gender"] == 1).all()
    assert (_person(fixed, "001498-1")["label"] == _person(fixed, "001498-1")["mask"] * 6 + 3 + 1).all()
    assert (_person(fixed, "001720")["gender"] == 0).all()
    # 004348 59 -> 60: moves to the >=60 group
    assert (_person(fixed, "004348")["age"] == 60).all() and (_person(fixed, "004348")["age_group"] == 2).all()
    # uncertain ones and the rest untouched; profile (the folder name) is never rewritten
    for pid in ("000225", "001009", "000001"):
        pd.testing.assert_frame_equal(_person(raw, pid), _person(fixed, pid))
    assert list(raw["profile"]) == list(fixed["profile"])


def test_relabel_all(tmp_path):
    lay = make(tmp_path, RELABEL_PEOPLE)
    t = read_train(lay.root, relabel="all")
    assert sorted(t.attrs["relabeled"]) == ["000020", "000225", "001009", "001498-1", "001720", "004348"]
    assert (_person(t, "000225")["gender"] == 0).all()
    a = _person(t, "001009")
    assert (a["age"] == 29).all() and (a["age_group"] == 0).all()
    assert (_person(t, "001498-1")["gender"] == 1).all()


def test_relabel_then_age_upper(tmp_path):
    lay = make(tmp_path, RELABEL_PEOPLE)
    t = read_train(lay.root, relabel="all", age_upper=50)
    assert (_person(t, "000001")["age_group"] == 2).all()  # 50 >= 50
    assert (_person(t, "004348")["age_group"] == 2).all()


def test_relabel_modes_and_table():
    with pytest.raises(ValueError, match="relabel mode"):
        load_relabel(mode="some")
    certain, every = load_relabel(mode="certain"), load_relabel(mode="all")
    assert len(certain) == 15 and len(every) == 33
    assert set(certain["change"]) == {"swap_incorrect_normal", "gender", "age"}
    assert set(certain["id"]) < set(every["id"])


@pytest.mark.parametrize("rows, match", [
    (["000020,gender,Male,1,"], r"line 2 \(id 000020, change gender\): gender value 'Male'; use one of"),
    (["000020,age,,1,"], r"line 2 \(id 000020, change age\): age value ''"),
    (["000001,gender,male,1,", "000020,age,sixty,1,"], r"line 3 .*age value 'sixty'"),
    (["000020,swap_incorrect_normal,,1,", "000020,swap_incorrect_normal,,0,"],
     r"same id and change: \[\('000020', 'swap_incorrect_normal'\)\]"),
])
def test_relabel_file_values_are_checked(tmp_path, rows, match):
    p = tmp_path / "fix.csv"
    p.write_text("\n".join(["id,change,value,certain,note", *rows]) + "\n")
    with pytest.raises(ValueError, match=match):
        load_relabel(p, mode="all")


def test_relabel_bad_mode_through_read_train(tmp_path):
    lay = make(tmp_path, RELABEL_PEOPLE[:1])
    with pytest.raises(ValueError, match="relabel mode"):
        read_train(lay.root, relabel="everything")


def test_apply_relabel_custom_file(tmp_path):
    lay = make(tmp_path, RELABEL_PEOPLE)
    raw = read_train(lay.root)
    p = tmp_path / "fix.csv"
    p.write_text("id,change,value,certain\n000001,age,61,1\n")
    out = apply_relabel(raw, "certain", path=p)
    assert out.attrs["relabeled"] == ["000001"]
    assert (out[out["id"] == "000001"]["age"] == 61).all()
    p.write_text("id,change,value,certain\n000001,race,x,1\n")
    with pytest.raises(ValueError, match="unknown change"):
        apply_relabel(raw, path=p)
    p.write_text("id,value\n000001,x\n")
    with pytest.raises(ValueError, match="lacks column"):
        apply_relabel(raw, path=p)
