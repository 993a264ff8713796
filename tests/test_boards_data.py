"""Boards and data sets: every board loads with its source; bad input gets one clear error."""

import numpy as np
import pytest

from codesign.board import board_names, load_board, parse_board
from codesign.importers.data import check_fits, load_dataset
from codesign.errors import BoardError, DataError

REQUIRED = {"pynq-z2": "xc7z020", "arty-a7-35": "xc7a35t", "zcu104": "xczu7ev", "kv260": "xck26",
            "zcu102": "xczu9eg", "vcu118": "xcvu9p", "alveo-u250": "xcu250", "de10-nano": "5CSEBA6",
            "arria10-gx1150": "10AX115", "stratix10-gx2800": "1SG280", "agilex7-f014": "AGF"}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_board_has_its_part_and_a_source(name):
    b = load_board(name)
    assert b.part.upper().startswith(REQUIRED[name].upper()) and b.source and b.lut > 0 and b.dsp > 0


def test_every_board_file_parses():
    assert set(REQUIRED) <= set(board_names())
    for n in board_names():
        load_board(n)


def test_unknown_board_lists_the_boards():
    with pytest.raises(BoardError, match=r"unknown board 'zynq-9000'; known boards: agilex7-f014, alveo-u250"):
        load_board("zynq-9000")


def test_malformed_yaml_is_one_line():
    with pytest.raises(BoardError, match=r"^my.yaml: malformed YAML"):
        parse_board("name: [unclosed", "my.yaml")


def test_board_with_a_negative_count_is_refused():
    text = load_board("pynq-z2").__dict__.copy()
    text["lut"] = -5
    import yaml

    with pytest.raises(BoardError, match=r"lut must be a non-negative integer, not -5"):
        parse_board(yaml.safe_dump(text), "x.yaml")


def test_digits_has_a_held_out_validation_split(digits):
    assert len(digits.X_test) == 360 and len(digits.X_val) > 100
    assert digits.X_train.shape[1:] == (64,) and digits.input_type.to_hls() == "ap_ufixed<5,1,AP_TRN,AP_WRAP>"


def _npz(tmp_path, **arrays):
    base = dict(X_train=np.zeros((20, 4)), y_train=np.zeros(20, dtype=int), X_test=np.zeros((5, 4)),
                y_test=np.zeros(5, dtype=int))
    base.update(arrays)
    p = tmp_path / "d.npz"
    np.savez(p, **base)
    return str(p)


def test_npz_with_nan_is_refused(tmp_path):
    X = np.zeros((20, 4))
    X[3, 1] = np.nan
    with pytest.raises(DataError, match=r"X_train contains NaN or infinite values"):
        load_dataset(_npz(tmp_path, X_train=X))


def test_npz_missing_arrays(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X_train=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"missing arrays y_train, X_test, y_test"):
        load_dataset(str(p))


def test_data_shape_must_match_the_model(tmp_path):
    ds = load_dataset(_npz(tmp_path))
    with pytest.raises(DataError, match=r"samples of shape \(4,\) but model 'm' takes \(64,\)"):
        check_fits(ds, (64,), 10, "m")


def test_labels_must_index_the_outputs(tmp_path):
    ds = load_dataset(_npz(tmp_path, y_train=np.full(20, 7)))
    with pytest.raises(DataError, match=r"has label 7 but model 'm' has only 5 outputs"):
        check_fits(ds, (4,), 5, "m")
