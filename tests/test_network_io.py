"""Save/load is exact to the bit; bad files give typed errors that say what to do."""

import json

import numpy as np
import pytest

from codesign.errors import ArtifactError, LayerError
from codesign.core.network import Network


def test_save_load_round_trip_is_bit_exact(digits_q, digits, tmp_path):
    digits_q.save(tmp_path)
    back = Network.load(tmp_path)
    q = digits_q.quantize_input(digits.X_test)
    assert np.array_equal(back.forward_int(q).values, digits_q.forward_int(q).values)
    for a, b in zip(digits_q.layers, back.layers):
        for k, v in a.arrays().items():
            assert np.array_equal(v, b.arrays()[k]) and v.dtype == b.arrays()[k].dtype
    assert back.input_type == digits_q.input_type


def test_float_network_round_trip(digits_float, tmp_path):
    digits_float.save(tmp_path)
    x = np.random.default_rng(0).random((5, 64))
    assert np.array_equal(Network.load(tmp_path).forward(x), digits_float.forward(x))


def test_a_file_from_a_newer_version_is_refused(digits_q, tmp_path):
    digits_q.save(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    doc["version"] = 99
    (tmp_path / "network.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"written by a newer fpga-codesign \(format version 99 > 2\); upgrade"):
        Network.load(tmp_path)


@pytest.mark.parametrize("damage", ["json", "npz", "missing_npz", "missing_array"])
def test_corrupt_files_are_refused(digits_q, tmp_path, damage):
    digits_q.save(tmp_path)
    if damage == "json":
        (tmp_path / "network.json").write_text("{not json")
        msg = r"network.json: corrupt network file"
    elif damage == "npz":
        (tmp_path / "weights.npz").write_bytes(b"PK\x03\x04garbage")
        msg = r"weights.npz: corrupt weights file"
    elif damage == "missing_npz":
        (tmp_path / "weights.npz").unlink()
        msg = r"weights.npz: missing; the artifact directory is incomplete"
    else:
        np.savez(tmp_path / "weights.npz", other=np.zeros(1))
        msg = r"weights.npz has no array 'fc1/weight'"
    with pytest.raises(ArtifactError, match=msg):
        Network.load(tmp_path)


def test_missing_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(ArtifactError, match=r"no saved network here; run 'codesign compress'"):
        Network.load(tmp_path / "nothing")


def test_quantized_weights_outside_their_type_are_refused_when_made():
    from codesign.core.layers import Dense

    with pytest.raises(LayerError, match=r"layer 'd': weight integers span \[0, 9\], outside ap_fixed<4,1"):
        Dense("d", np.array([[9], [0]]), np.array([0]), weight_type="ap_fixed<4,1>", bias_type="ap_fixed<4,1>")


def test_pruned_weights_are_stored_as_zero_and_mask_is_kept():
    from codesign.core.layers import Dense

    d = Dense("d", np.ones((2, 2)), np.zeros(2), mask=np.array([[True, False], [False, True]]))
    assert d.weight.tolist() == [[1, 0], [0, 1]] and d.mask.sum() == 2


@pytest.mark.parametrize("name", ["directory", "network.json"])
def test_a_saved_network_loads_by_its_directory_or_its_json_file(digits_q, tmp_path, name):
    import codesign

    digits_q.save(tmp_path)
    back = codesign.load(tmp_path if name == "directory" else tmp_path / "network.json")
    q = digits_q.quantize_input(np.zeros((1, 64)))
    assert np.array_equal(back.forward_int(q).values, digits_q.forward_int(q).values)
