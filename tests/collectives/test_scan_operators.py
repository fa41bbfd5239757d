"""All-Scan's combine operators on one process, against numpy: the affine pair's combine, in-place
combine and identity, max's identity per dtype, the flipped operator, resolving ops by name or
duck type, and the checks of what each op takes (each with its message)."""

import re

import numpy as np
import pytest

from hpcrt import to_fake_gpu
from hpcrt.backends.arrays import backend_of
from hpcrt.collectives.allscan.ops import (AFFINE, MAX, SUM, ScanOp, as_parts, check_sendable, flipped, from_parts,
                                           resolve_op)

RNG = np.random.default_rng(7)
LOWER = (RNG.standard_normal((3, 1)), RNG.standard_normal((3, 4)))
UPPER = (RNG.standard_normal((3, 1)), RNG.standard_normal((3, 4)))


def affine_reference(lower, upper):
    """y -> a2 (a1 y + b1) + b2: the map of ``lower`` then ``upper``."""
    (a1, b1), (a2, b2) = lower, upper
    return a1 * a2, a2 * b1 + b2


def test_affine_combine_and_combine_into_match_the_composed_map():
    for got in (AFFINE.combine(LOWER, UPPER), _combined_into(AFFINE, LOWER, UPPER)):
        for part, want in zip(got, affine_reference(LOWER, UPPER)):
            np.testing.assert_allclose(part, want, rtol=1e-15)
    y = RNG.standard_normal((3, 4))
    a, b = AFFINE.combine(LOWER, UPPER)
    np.testing.assert_allclose(a * y + b, UPPER[0] * (LOWER[0] * y + LOWER[1]) + UPPER[1], rtol=1e-12)


def _combined_into(op, lower, upper):
    out = (np.full_like(lower[0], np.nan), np.full_like(lower[1], np.nan))
    op.combine_into(lower, upper, out)
    return out


def test_affine_identity_is_ones_and_zeros_shaped_and_typed_like_each_part():
    a, b = np.ones((3, 1), dtype=np.int32), np.ones((3, 4), dtype=np.float32)  # neither numpy's default
    ones, zeros = AFFINE.identity((a, b))
    assert (ones.shape, ones.dtype, zeros.shape, zeros.dtype) == ((3, 1), np.int32, (3, 4), np.float32)
    assert (ones == 1).all() and (zeros == 0).all()
    for part, want in zip(AFFINE.combine((ones, zeros), LOWER), LOWER):
        np.testing.assert_array_equal(part, want)


@pytest.mark.parametrize("dtype, lowest", [(np.float32, -np.inf), (np.int8, -128), (np.uint16, 0), (np.bool_, False),
                                           (np.int64, np.iinfo(np.int64).min)])
def test_max_identity_is_the_lowest_value_of_the_dtype(dtype, lowest):
    identity = MAX.identity(np.zeros((2, 3), dtype=dtype))
    assert identity.shape == (2, 3) and identity.dtype == dtype and (identity == lowest).all()


def test_max_has_no_identity_for_complex_numbers():
    with pytest.raises(TypeError, match="all_scan: op 'max' has no identity for dtype complex128"):
        MAX.identity(np.zeros(2, dtype=complex))


@pytest.mark.parametrize("op, operand, message", [
    (SUM, (np.zeros(2), np.zeros(2)), "all_scan: op 'sum' takes one array, got a tuple of 2"),
    (MAX, [np.zeros(2)], "all_scan: op 'max' takes one array, got a list of 1"),
    (MAX, np.zeros(2, dtype=complex), "all_scan: op 'max' is not defined for dtype complex128"),
    (SUM, np.zeros(2, dtype=object), "all_scan: op 'sum' is not defined for dtype object"),
    (SUM, "not an array", "numpy or CuPy array"),
    (AFFINE, np.zeros(2), "all_scan: op 'affine' takes a pair \\(a, b\\) of arrays meaning y -> a\\*y \\+ b, "
                          "got ndarray"),
    (AFFINE, (np.zeros(2),) * 3, "takes a pair"),
    (AFFINE, (np.zeros((3, 4)), np.zeros((3, 1))), "needs a broadcastable against b, got a of shape \\(3, 4\\) "
                                                   "and b of shape \\(3, 1\\)"),
    (AFFINE, (np.zeros(5), np.zeros((3, 4))), "got a of shape \\(5,\\) and b of shape \\(3, 4\\)"),
])
def test_checks_refuse_what_an_op_cannot_take(op, operand, message):
    with pytest.raises(TypeError, match=message):
        op.check(operand)


@pytest.mark.parametrize("op, operand", [(SUM, np.zeros(2, dtype=np.int8)), (MAX, np.zeros(2, dtype=bool)),
                                         (AFFINE, LOWER), (AFFINE, [np.zeros(4), np.zeros((3, 4))])])
def test_checks_pass_what_an_op_takes(op, operand):
    assert op.check(operand) is None


def test_operand_parts_and_back():
    x, pair = np.zeros(3), (np.zeros(1), np.ones(2))
    assert as_parts(x) == (x,) and as_parts(pair) == pair and as_parts(list(pair)) == pair
    assert from_parts((x,), x) is x and from_parts(list(pair), pair) == pair and from_parts(pair, list(pair)) == pair
    with pytest.raises(TypeError, match="^all_scan: the operand holds no array$"):
        as_parts(())
    mixed = (np.zeros(2), to_fake_gpu(np.zeros(2)))
    names = sorted(backend_of(part).name for part in mixed)
    with pytest.raises(TypeError, match=re.escape(f"all_scan: the operand mixes array backends {names}")):
        as_parts(mixed)


def test_unsendable_parts_are_refused_naming_the_dtype():
    check_sendable((np.zeros(2), np.zeros(2, dtype=np.int32)))
    with pytest.raises(TypeError, match="all_scan: dtype object cannot be sent between ranks"):
        check_sendable((np.zeros(2), np.zeros(2, dtype=object)))


def test_flipped_applies_the_upper_operand_first_and_keeps_the_rest():
    back = flipped(AFFINE)
    for got in (back.combine(LOWER, UPPER), _combined_into(back, LOWER, UPPER)):
        for part, want in zip(got, affine_reference(UPPER, LOWER)):
            np.testing.assert_allclose(part, want, rtol=1e-15)
    assert (back.name, back.rowwise) == ("flipped(affine)", True)
    assert back.check is AFFINE.check and back.identity is AFFINE.identity
    user = flipped(ScanOp(lambda lo, up: lo - up, np.zeros_like, "minus"))
    assert user.combine_into is None and user.combine(5, 2) == -3 and user.name == "flipped(minus)"
    assert user.rowwise is False and user.check is None


class Concat:
    """A user op by duck type: string concatenation, associative and not commutative."""

    name = "concat"
    rowwise = 1

    def combine(self, lower, upper):
        return lower + upper

    def identity(self, x):
        return ""


class CombineOnly:
    def combine(self, lower, upper):
        return upper


class Nameless:
    def combine(self, lower, upper):
        return upper

    def identity(self, x):
        return None


def test_resolve_op_by_name_scan_op_and_duck_type():
    assert [resolve_op(name) for name in ("sum", "max", "affine")] == [SUM, MAX, AFFINE]
    mine = ScanOp(lambda lo, up: up, np.zeros_like, "mine")
    assert resolve_op(mine) is mine
    user = resolve_op(Concat())
    assert (user.name, user.rowwise, user.combine("ab", "c"), user.identity("x")) == ("concat", True, "abc", "")
    assert user.check is None and user.combine_into is None
    nameless = resolve_op(Nameless())
    assert (nameless.name, nameless.rowwise) == ("Nameless", False)
    assert nameless.combine(1, 2) == 2 and nameless.identity(0) is None


def test_resolve_op_refuses_unknown_names_and_objects():
    with pytest.raises(ValueError, match=r"all_scan: unknown op 'prod'; builtin ops are \['affine', 'max', 'sum'\]"):
        resolve_op("prod")
    for bad in (max, object(), 3, CombineOnly()):
        with pytest.raises(TypeError, match=f"all_scan: op must be 'sum', 'max', 'affine' or a ScanOp, got "
                                            f"{type(bad).__name__}$"):
            resolve_op(bad)
