"""Value and Array."""

import pytest

from corral import Array, Value


def test_value_reads_zero_until_set(corrald, unique):
    v = Value(unique("v"))
    assert v.value == 0
    v.value = 41
    assert v.value == 41
    assert v.add(1) == 42
    assert v.add(-50) == -8
    assert Value(v.name).value == -8


def test_value_with_an_initial_value_sets_it(corrald, unique):
    name = unique("v")
    Value(name).add(5)
    assert Value(name, 100).value == 100


def test_value_compare_and_swap(corrald, unique):
    v = Value(unique("v"), 1)
    assert v.compare_and_swap(1, 2) is True
    assert v.compare_and_swap(1, 3) is False
    assert v.value == 2


def test_value_overflow_is_an_error_never_a_wrap(corrald, unique):
    v = Value(unique("v"), 2**63 - 1)
    with pytest.raises(OverflowError):
        v.add(1)
    with pytest.raises(ValueError):
        v.add(1)
    assert v.value == 2**63 - 1


def test_value_holds_integers_only(corrald, unique):
    v = Value(unique("v"))
    for bad in (1.5, "1", True, 2**63):
        with pytest.raises(ValueError):
            v.value = bad


def test_value_get_lock(corrald, unique):
    v = Value(unique("v"), 0)
    with v.get_lock():
        v.value += 1
    assert v.value == 1


def test_int_array(corrald, unique):
    a = Array(unique("a"), "i", 3)
    assert len(a) == 3
    assert a[:] == [0, 0, 0]
    a[0] = 5
    a[-1] = 7
    assert a[0] == 5 and a[2] == 7 and a[-3] == 5
    assert a.add(1, 10) == 10
    assert list(a) == [5, 10, 7]
    assert a[1:] == [10, 7]
    a[0:2] = [1, 2]
    assert a.tolist() == [1, 2, 7]
    with pytest.raises(ValueError):
        a[0:2] = [1]
    with pytest.raises(IndexError):
        a[3]
    with pytest.raises(IndexError):
        a[-4] = 1
    with pytest.raises(ValueError):
        a[0] = 1.5
    with pytest.raises(TypeError):
        a["x"]


def test_float_array_from_an_initializer(corrald, unique):
    a = Array(unique("a"), "d", [1.0, 2.5, 3])
    assert a[:] == [1.0, 2.5, 3.0]
    assert a.kind == "f64"
    assert a.add(1, 0.5) == 3.0
    with pytest.raises(ValueError):
        a[0] = float("inf")


def test_array_attach_and_reinitialize(corrald, unique):
    name = unique("a")
    Array(name, "q", [1, 2])
    b = Array(name)  # attach
    assert (b.kind, len(b), b[:]) == ("i64", 2, [1, 2])
    assert Array(name, "l", 2)[:] == [1, 2]  # same shape: kept
    assert Array(name, "i", [9, 9])[:] == [9, 9]  # initializer: overwritten
    with pytest.raises(ValueError):
        Array(name, "d", 2)  # another type
    with pytest.raises(ValueError):
        Array(name, "i", 3)  # another length


def test_array_errors(corrald, unique):
    with pytest.raises(ValueError):
        Array(unique("a"), "z", 3)
    with pytest.raises(LookupError):
        Array(unique("missing"))


def test_a_long_array_reads_whole_in_slices(corrald, unique):
    # corrald sends at most 65,536 elements in one reply; tolist() reads slices.
    name = unique("a")
    a = Array(name, "q", 200_000)
    a[199_999] = 7
    values = a.tolist()
    assert len(values) == 200_000
    assert values[-1] == 7 and values[0] == 0
    assert len(Array(name)) == 200_000
