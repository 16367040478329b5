"""Calls into a twin: arguments, values of every builtin type, references, results."""

import collections
import datetime
import decimal
import fractions
import functools
import math
import os
import platform
import struct

import pytest

import twinhelpers
from cpy2py import _native, kernel_state

BIG = 10**300

ROUND_TRIP = [
    pytest.param(None, id="None"),
    pytest.param(True, id="True"),
    pytest.param(False, id="False"),
    pytest.param(0, id="int-0"),
    pytest.param(1, id="int-1"),
    pytest.param(-1, id="int-neg"),
    pytest.param(2**31, id="int-2**31"),
    pytest.param(2**63 - 1, id="int-i64-max"),
    pytest.param(-(2**63), id="int-i64-min"),
    pytest.param(2**63, id="int-i64-max+1"),
    pytest.param(-(2**63) - 1, id="int-i64-min-1"),
    pytest.param(2**64, id="int-2**64"),
    pytest.param(-(2**100), id="int-neg-big"),
    pytest.param(BIG, id="int-10**300"),
    pytest.param(0.0, id="float-0"),
    pytest.param(1.5, id="float"),
    pytest.param(-2.25, id="float-neg"),
    pytest.param(1e308, id="float-huge"),
    pytest.param(5e-324, id="float-denormal"),
    pytest.param(float("inf"), id="float-inf"),
    pytest.param(float("-inf"), id="float-neg-inf"),
    pytest.param("", id="str-empty"),
    pytest.param("plain ascii", id="str-ascii"),
    pytest.param("ünïcødé ✓ 漢字 🐍", id="str-unicode"),
    pytest.param("nul\x00inside", id="str-nul"),
    pytest.param("x" * 100000, id="str-long"),
    pytest.param(b"", id="bytes-empty"),
    pytest.param(bytes(range(256)), id="bytes-all"),
    pytest.param([], id="list-empty"),
    pytest.param([1, "two", 3.0, None, True], id="list-mixed"),
    pytest.param((), id="tuple-empty"),
    pytest.param((1,), id="tuple-1"),
    pytest.param((1, (2, (3, ()))), id="tuple-nested"),
    pytest.param({}, id="dict-empty"),
    pytest.param({"a": 1, 2: "b", (3, 4): [5], None: None, b"k": 1.5, 2.5: True}, id="dict-keys"),
    pytest.param(set(), id="set-empty"),
    pytest.param({1, 2, 3}, id="set"),
    pytest.param(frozenset(), id="frozenset-empty"),
    pytest.param(frozenset({"x", 1, (2, 3)}), id="frozenset"),
    pytest.param({frozenset({1, 2}), (1, 2), "s"}, id="set-of-hashables"),
    pytest.param(
        {
            "list": [1, [2, [3, [4, []]]]],
            "tuple": (1, {"set": {1, 2}}, frozenset({3})),
            "bytes": [b"x", b""],
            "dict": {"inner": {"deeper": [{"deepest": (None,)}]}},
            "big": [BIG, -BIG],
        },
        id="nested",
    ),
    pytest.param(list(range(100000)), id="list-long"),
    # 1024 items or more: one pickle instead of a Value per item
    pytest.param([i if i % 3 else (str(i), [i], {i: BIG}) for i in range(3000)], id="list-big-mixed"),
    pytest.param(tuple(range(1024)), id="tuple-big"),
    pytest.param({"key%d" % i: i * 0.5 for i in range(10000)}, id="dict-big"),
    pytest.param(set(range(2000)), id="set-big"),
    pytest.param(frozenset(str(i) for i in range(2000)), id="frozenset-big"),
    pytest.param(functools.reduce(lambda acc, _: [acc], range(60), []), id="list-deep"),
    # 1024 items or more of only 64-bit ints or only floats: one packed block;
    # anything else in the list (a bool, a bigger int, a subclass) keeps pickle
    pytest.param([(-1) ** i * (i << 40) for i in range(5000)] + [2**63 - 1, -(2**63)], id="ints-packed"),
    pytest.param([i * 0.25 for i in range(3000)] + [-0.0, float("inf")], id="floats-packed"),
    pytest.param(list(range(2000)) + [True], id="ints-and-a-bool"),
    pytest.param(list(range(2000)) + [2**63], id="ints-and-a-big-int"),
    pytest.param([twinhelpers.Color.GREEN] + list(range(2000)), id="int-subclass-first"),
    pytest.param(list(range(2000)) + [1.5], id="ints-and-a-float"),
    pytest.param([0.5] * 2000 + [1], id="floats-and-an-int"),
    # ints from -5 to 1024 are shared Python objects on the receiving side
    pytest.param([-6, -5, -1, 0, 1, 255, 256, 1023, 1024, 1025, -(2**63), 2**63 - 1], id="ints-around-the-shared-ones"),
    # 1024 items or more, all atoms: pickled without memo on CPython
    pytest.param(["s", 1, 2.5, None, True, b"x", "a\ud800", BIG, -0.0] * 300, id="list-of-atoms"),
    pytest.param(tuple(["s", 7, b"b", None] * 300), id="tuple-of-atoms"),
    pytest.param({("k%d" % i if i % 2 else i): (b"v" if i % 3 else None) for i in range(3000)}, id="dict-of-atoms"),
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_builtin_values_round_trip_with_their_types(twin, value):
    result, remote_types = twin.execute(twinhelpers.echo_with_types, value)
    assert result == value
    expected_types = twinhelpers.type_tree(value)
    assert remote_types == expected_types  # as received in the twin
    assert twinhelpers.type_tree(result) == expected_types  # as received back here


def test_large_containers_keep_shared_parts_and_cycles(twin):
    # A container of atoms only is pickled without memo; anything else keeps it.
    inner = [1]
    shared = [inner] * 1500 + ["atom"] * 1500
    result = twin.execute(twinhelpers.echo, shared)
    assert result == shared and result[0] is result[1499]
    cyclic = {i: str(i) for i in range(2000)}
    cyclic["self"] = cyclic
    result = twin.execute(twinhelpers.echo, cyclic)
    assert result["self"] is result and result[1999] == "1999"
    repeated = "x" * 100
    result = twin.execute(twinhelpers.echo, [repeated] * 2000)
    assert result == [repeated] * 2000


def test_packed_floats_keep_their_bits(twin):
    values = [float("nan"), -0.0, 5e-324, float("-inf")] * 512
    result = twin.execute(twinhelpers.echo, values)
    packed = struct.pack("<%dd" % len(values), *values)
    assert type(result) is list and struct.pack("<%dd" % len(result), *result) == packed


def test_float_nan_and_negative_zero(twin):
    nan, types = twin.execute(twinhelpers.echo_with_types, float("nan"))
    assert type(nan) is float and math.isnan(nan)
    assert types == "builtins.float"
    zero = twin.execute(twinhelpers.echo, -0.0)
    assert zero == 0.0 and math.copysign(1.0, zero) == -1.0


def test_bool_is_not_int(twin):
    assert twin.execute(twinhelpers.echo, [True, 1, False, 0]) == [True, 1, False, 0]
    assert [type(v) for v in twin.execute(twinhelpers.echo, [True, 1, False, 0])] == [bool, int, bool, int]
    assert twin.execute(twinhelpers.qualname_of, bool) == "builtins.bool"


def test_lone_surrogates_in_str(twin):
    # valid Python str that is not valid UTF-8
    value = "a\ud800b\udfffc"
    assert twin.execute(twinhelpers.echo, value) == value


def test_one_mebibyte_of_bytes_both_ways(twin):
    data = os.urandom(1 << 20)
    assert twin.execute(twinhelpers.digest, data) == twinhelpers.digest(data)
    assert twin.execute(twinhelpers.echo, data) == data
    made = twin.execute(twinhelpers.make_bytes, 1 << 20)
    assert type(made) is bytes and made == twinhelpers.make_bytes(1 << 20)


SUBCLASSES = [
    pytest.param(collections.OrderedDict([("b", 1), ("a", 2), ("c", 3)]), id="OrderedDict"),
    pytest.param(collections.Counter("abracadabra"), id="Counter"),
    pytest.param(collections.defaultdict(list, {"k": [1]}), id="defaultdict"),
    pytest.param(twinhelpers.Color.GREEN, id="IntEnum"),
    pytest.param(twinhelpers.Point(1, 2), id="namedtuple"),
    pytest.param(twinhelpers.Tag("tagged"), id="str-subclass"),
    pytest.param(twinhelpers.Items([1, 2]), id="list-subclass"),
    pytest.param(bytearray(b"mutable"), id="bytearray"),
    pytest.param(complex(1, -2), id="complex"),
    pytest.param(decimal.Decimal("1.10"), id="Decimal"),
    pytest.param(fractions.Fraction(1, 3), id="Fraction"),
    pytest.param(datetime.datetime(2024, 2, 29, 12, 30, 1, 5), id="datetime"),
    pytest.param(range(3, 30, 3), id="range"),
    pytest.param(twinhelpers.Box({"nested": [1]}), id="plain-object"),
    pytest.param([twinhelpers.Color.RED, {"p": twinhelpers.Point(3, 4)}], id="inside-builtins"),
]


@pytest.mark.parametrize("value", SUBCLASSES)
def test_subclasses_and_other_types_keep_their_type(twin, value):
    result, remote_types = twin.execute(twinhelpers.echo_with_types, value)
    assert result == value
    assert type(result) is type(value)
    assert remote_types == twinhelpers.type_tree(value)
    assert twinhelpers.type_tree(result) == twinhelpers.type_tree(value)


def test_ordered_dict_keeps_order_and_enum_keeps_identity(twin):
    ordered = twin.execute(twinhelpers.echo, collections.OrderedDict([("z", 1), ("a", 2)]))
    assert list(ordered) == ["z", "a"]
    assert twin.execute(twinhelpers.echo, twinhelpers.Color.RED) is twinhelpers.Color.RED
    assert list(twin.execute(twinhelpers.echo, {"z": 1, "a": 2, "m": 3})) == ["z", "a", "m"]


def test_args_kwargs_and_defaults(twin):
    probe = twinhelpers.signature_probe
    assert twin.execute(probe, 1, c=3) == {"a": 1, "b": 2, "args": (), "c": 3, "d": 4, "kwargs": {}}
    assert twin.execute(probe, 1, 2, 5, 6, c=3, d=7, e=8) == {
        "a": 1,
        "b": 2,
        "args": (5, 6),
        "c": 3,
        "d": 7,
        "kwargs": {"e": 8},
    }
    assert twin.execute(probe, a="x", c=None)["a"] == "x"
    # keyword names that execute() itself might have used
    assert twin.execute(probe, 0, c=0, call="c", self="s", func="f")["kwargs"] == {
        "call": "c",
        "self": "s",
        "func": "f",
    }
    assert twin.execute(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    assert twin.execute(dict, [("a", 1)], b=2) == {"a": 1, "b": 2}
    with pytest.raises(TypeError):
        twin.execute(probe)  # missing arguments: the twin's TypeError


def test_builtins_modules_and_classes_by_reference(twin, flavour):
    assert twin.execute(platform.python_implementation) == twinhelpers.IMPLEMENTATIONS[flavour]
    assert twin.execute(os.getpid) == twin.pid != os.getpid()
    assert twin.execute(len, "four") == 4
    assert twin.execute(math.sqrt, 16.0) == 4.0
    box = twin.execute(twinhelpers.Box, 5)  # a class is called there, the instance comes back
    assert type(box) is twinhelpers.Box and box.value == 5
    # classes and functions as arguments travel by reference as well
    assert twin.execute(twinhelpers.qualname_of, collections.OrderedDict) == "collections.OrderedDict"
    assert twin.execute(twinhelpers.qualname_of, twinhelpers.echo) == "twinhelpers.echo"
    assert twin.execute(twinhelpers.echo, twinhelpers.Box) is twinhelpers.Box
    assert twin.execute(twinhelpers.echo, len) is len


def test_callables_that_travel_by_value(twin):
    assert twin.execute(functools.partial(twinhelpers.add, 40), 2) == 42
    assert twin.execute(twinhelpers.Box(7).get) == 7  # bound method of a pickled object
    assert twin.execute([1, 2, 1].count, 1) == 2  # bound builtin method


def test_mutated_object_sent_again_arrives_with_its_current_value(twin):
    items = [1]
    assert twin.execute(twinhelpers.echo, items) == [1]
    items.append(2)
    assert twin.execute(twinhelpers.echo, items) == [1, 2]
    box = twinhelpers.Box(1)
    assert twin.execute(twinhelpers.box_value, box) == 1
    box.value = 2
    assert twin.execute(twinhelpers.box_value, box) == 2


def test_arguments_are_copies(twin):
    items = [1]
    assert twin.execute(twinhelpers.append_and_return, items, 2) == [1, 2]
    assert items == [1]
    box = twinhelpers.Box(1)
    assert twin.execute(twinhelpers.increment_box, box).value == 2
    assert box.value == 1


def test_kernel_state_in_the_twin(twin, flavour):
    twin_id = twinhelpers.TWIN_IDS[flavour]
    assert twin.execute(twinhelpers.kernel_info, twin_id) == {
        "TWIN_ID": twin_id,
        "MASTER_ID": kernel_state.MASTER_ID,
        "is_master": False,
        "is_twinterpreter": True,
        "is_twinterpreter(twin_id)": True,
        "is_twinterpreter(MASTER_ID)": False,
    }
    assert twin.execute(_native.twin_id) == twin_id
    assert twin.execute(_native.master_id) == kernel_state.MASTER_ID
    assert twinhelpers.kernel_info(twin_id) == {
        "TWIN_ID": kernel_state.MASTER_ID,
        "MASTER_ID": kernel_state.MASTER_ID,
        "is_master": True,
        "is_twinterpreter": False,
        "is_twinterpreter(twin_id)": False,
        "is_twinterpreter(MASTER_ID)": True,
    }


def test_twin_sys_path_reaches_this_suite(twin):
    here = os.path.dirname(os.path.abspath(__file__))
    assert here in twin.execute(twinhelpers.sys_path)
