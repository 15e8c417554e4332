import numpy as np
import pytest

from mask_keras import labels as L


def test_encode_decode_all_classes():
    seen = set()
    for m in range(3):
        for g in range(2):
            for a in range(3):
                c = L.encode(m, g, a)
                assert c == m * 6 + g * 3 + a
                assert L.decode(c) == (m, g, a)
                seen.add(c)
    assert seen == set(range(18))


def test_vectorised():
    c = np.arange(18)
    m, g, a = L.decode(c)
    np.testing.assert_array_equal(L.encode(m, g, a), c)


@pytest.mark.parametrize("age,upper,group", [(18, 60, 0), (29, 60, 0), (30, 60, 1), (59, 60, 1), (60, 60, 2),
                                             (58, 58, 2), (57, 58, 1), (59, 59, 2)])
def test_age_group_threshold(age, upper, group):
    assert L.age_group(age, upper=upper) == group


def test_bad_values():
    with pytest.raises(ValueError, match="mask"):
        L.encode(3, 0, 0)
    with pytest.raises(ValueError, match="class"):
        L.decode(18)
    with pytest.raises(ValueError, match="lower < upper"):
        L.age_group(40, upper=25)
    with pytest.raises(ValueError, match="unknown task"):
        L.check_task("ages")


def test_class_name():
    assert L.class_name(11) == "incorrect/female/>=60"


def test_task_target_per_task_and_multihead_is_explained():
    m, g, a = np.array([0, 1, 2]), np.array([1, 0, 1]), np.array([2, 1, 0])
    assert L.task_target("age", m, g, a).tolist() == [2, 1, 0]
    assert L.task_target("multi", m, g, a).tolist() == [L.encode(0, 1, 2), L.encode(1, 0, 1), L.encode(2, 1, 0)]
    with pytest.raises(ValueError, match="'multihead' has no single target"):
        L.task_target("multihead", m, g, a)
    with pytest.raises(ValueError, match="unknown task 'ages'"):
        L.task_target("ages", m, g, a)
