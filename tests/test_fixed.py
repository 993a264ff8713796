"""Fixed-point casts against hand-computed ap_fixed results, for every quantization and overflow mode."""

import numpy as np
import pytest

from codesign.core import fixed
from codesign.errors import FixedTypeError
from codesign.core.fixed import FixedType

# source: ap_fixed<8,4> (4 fractional bits); target: 2 fractional bits, so 2 bits are dropped.
# q values are in units of 1/16: 0.625 = 10, 0.375 = 6 (a tie at 0.5 LSB of the target), etc.
SRC = FixedType(8, 4)


@pytest.mark.parametrize(
    "q, trn, rnd, rnd_conv",
    [
        (10, 2, 3, 2),      # 0.625 -> 0.5 / 0.75 / 0.5: tie, floor is even (2) so RND_CONV stays
        (6, 1, 2, 2),       # 0.375 -> tie, floor 1 is odd: RND_CONV goes up to 2
        (7, 1, 2, 2),       # 0.4375: above half
        (5, 1, 1, 1),       # 0.3125: below half
        (-6, -2, -1, -2),   # -0.375: floor is -2 (even); RND ties toward +inf -> -1
        (-10, -3, -2, -2),  # -0.625: floor -3 odd -> RND_CONV up to -2; RND -> -2
        (-7, -2, -2, -2),   # -0.4375: above half
        (-5, -2, -1, -1),   # -0.3125: below half
    ],
)
def test_rounding_modes_match_hand_computed(q, trn, rnd, rnd_conv):
    for quant, want in (("TRN", trn), ("RND", rnd), ("RND_CONV", rnd_conv)):
        dst = FixedType(8, 6, True, quant, "WRAP")
        assert fixed.cast(np.array([q]), SRC, dst)[0] == want, quant


@pytest.mark.parametrize(
    "dst, q, want",
    [
        (FixedType(4, 4, True, "TRN", "SAT"), 16 * 9, 7),        # 9 saturates to 7
        (FixedType(4, 4, True, "TRN", "SAT"), -16 * 9, -8),      # -9 saturates to -8
        (FixedType(4, 4, True, "TRN", "WRAP"), 16 * 9, -7),      # 9 wraps to 9 - 16
        (FixedType(4, 4, True, "TRN", "WRAP"), -16 * 9, 7),      # -9 wraps to -9 + 16
        (FixedType(4, 4, False, "TRN", "SAT"), -16 * 3, 0),      # unsigned: negatives clamp to 0
        (FixedType(4, 4, False, "TRN", "WRAP"), -16 * 3, 13),    # unsigned wrap: -3 mod 16
        (FixedType(4, 4, False, "TRN", "SAT"), 16 * 20, 15),
        (FixedType(4, 2, True, "RND_CONV", "SAT"), 31, 7),       # 1.9375 rounds to 2.0, saturates at 1.75
    ],
)
def test_overflow_modes_match_hand_computed(dst, q, want):
    assert fixed.cast(np.array([q]), FixedType(16, 12), dst)[0] == want


def test_cast_to_more_fraction_bits_is_exact():
    assert list(fixed.cast(np.array([3, -3]), FixedType(4, 2), FixedType(8, 2))) == [48, -48]


@pytest.mark.parametrize("quant", ["TRN", "RND", "RND_CONV"])
def test_quantize_from_float_agrees_with_integer_cast(quant, rng):
    src = FixedType(24, 8)
    q = rng.integers(src.min_int, src.max_int, size=2000)
    dst = FixedType(10, 4, True, quant, "SAT")
    direct = fixed.quantize(fixed.to_float(q, src), dst)
    assert np.array_equal(direct, fixed.cast(q, src, dst))


def test_wide_types_use_python_integers_and_never_wrap_silently():
    t = FixedType(80, 40)
    big = np.array([(1 << 70) + 3, -(1 << 75)], dtype=object)
    out = fixed.cast(big, FixedType(120, 60), t)  # 60 -> 40 fractional bits
    assert out.dtype == object and int(out[0]) == (1 << 50) and int(out[1]) == -(1 << 55)


def test_parse_and_print_round_trip():
    for text in ("ap_fixed<16,6,AP_RND_CONV,AP_SAT>", "ap_ufixed<8,0,AP_TRN,AP_WRAP>"):
        assert FixedType.parse(text).to_hls() == text
    assert FixedType.parse("ap_fixed<16,6>") == FixedType(16, 6)
    assert FixedType.parse("ap_uint<4>") == FixedType(4, 4, False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("ap_fixed16,6", r"cannot parse fixed-point type 'ap_fixed16,6': expected e.g. 'ap_fixed<16,6>'"),
        ("ap_fixed<16,6,AP_FOO>", r"quantization mode must be one of TRN, RND, RND_CONV, not 'FOO'"),
        ("ap_fixed<0,0>", r"fixed-point width must be a positive integer, not 0"),
    ],
)
def test_bad_type_strings_say_what_is_wrong(text, message):
    with pytest.raises(FixedTypeError, match=message):
        FixedType.parse(text)


def test_corner_values_are_inside_the_type():
    t = FixedType(6, 2, True)
    c = fixed.corner_values(t)
    assert c.min() == t.min_int and c.max() == t.max_int and 0 in c
