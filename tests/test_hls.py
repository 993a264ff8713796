"""hls4ml projects: C simulation bit-exact against the reference, sparsity in the generated code."""

import copy

import numpy as np
import pytest

from codesign.board import load_board
from codesign.errors import BackendError, ToolNotFoundError
from hls.csim import csim_check
from hls.compressed import config_constants, stored_triples
from hls.project import dense_plan, unrolled_products, write_project
from codesign.core.verify import verification_inputs

XILINX, INTEL = "zcu102", "arria10-gx1150"

# backend x sparse form, as hls4ml's own tests sweep backends and strategies
# (distributed arithmetic at reuse 1 and the unrolled form take a minute on this network: slow; CI simulates
# DA on the digits network (test_hls_build) and the unrolled form on a small one, below)
CASES = [pytest.param("vitis", "da", marks=pytest.mark.slow), ("vivado", "latency"),
         pytest.param("vivado", "unrolled", marks=pytest.mark.slow), ("quartus", "auto"),
         ("vitis", "compressed"), ("vivado", "compressed"), ("quartus", "compressed")]


@pytest.mark.parametrize("backend, form", CASES)
def test_qkeras_jet_tagger_csim_is_bit_exact_on_10000_inputs(qkeras_net, tmp_path, backend, form):
    board = load_board(XILINX if backend in ("vitis", "vivado") else INTEL)
    p = write_project(qkeras_net, board, backend, tmp_path / "prj", form=form)
    q = verification_inputs(qkeras_net, None, 10000)
    r = csim_check(p, qkeras_net, q)
    print(r)
    assert r["csim_bit_exact"] and r["mismatches"] == 0 and r["samples"] >= 10000


@pytest.mark.parametrize("backend", ["vivado", "quartus"])
def test_digits_csim_is_bit_exact_including_corners(digits_q, digits, tmp_path, backend):
    board = load_board("arty-a7-35" if backend == "vivado" else "de10-nano")
    p = write_project(digits_q, board, backend, tmp_path / "prj", form="latency" if backend == "vivado" else "auto")
    q = verification_inputs(digits_q, digits.X_test, 10000)
    r = csim_check(p, digits_q, q)
    assert r["csim_bit_exact"], r["first_mismatch"]


def test_unrolled_form_csim_is_bit_exact_on_a_small_network(small_mlp, tmp_path):
    p = write_project(small_mlp, load_board(XILINX), "vivado", tmp_path / "prj", form="unrolled")
    r = csim_check(p, small_mlp, verification_inputs(small_mlp, None, 2000))
    assert r["csim_bit_exact"] and r["samples"] == 2000, r["first_mismatch"]


def test_unrolled_project_holds_one_product_per_nonzero_weight(qkeras_net, tmp_path):
    p = write_project(qkeras_net, load_board(XILINX), "vivado", tmp_path / "prj", form="unrolled")
    counts = unrolled_products(p.directory)
    dense = qkeras_net.weighted_layers()
    assert [c for c, _ in counts] == [int(np.count_nonzero(l.weight)) for l in dense]
    # the multiplier limit hls4ml derives subtracts the all-zero blocks
    for (n, limit), layer in zip(counts, dense):
        rf = dense_plan(layer, "vivado", "unrolled")["ReuseFactor"]
        assert limit < layer.weight.size / rf or np.count_nonzero(layer.weight) == layer.weight.size


def test_project_uses_the_board_part_and_clock_and_has_a_readme(qkeras_net, tmp_path):
    board = load_board("kv260")
    p = write_project(qkeras_net, board, "vitis", tmp_path / "prj", form="latency")
    cfg = (p.directory / "hls4ml_config.yml").read_text()
    assert f"Part: {board.part}" in cfg and "ClockPeriod: 5.0" in cfg  # 200 MHz
    assert "build_prj.tcl" in (p.directory / "README.md").read_text()


def test_oneapi_project_is_written_and_csim_reported_as_skipped(qkeras_net, tmp_path):
    p = write_project(qkeras_net, load_board("agilex7-f014"), "oneapi", tmp_path / "prj")
    assert (p.directory / "CMakeLists.txt").is_file()
    r = csim_check(p, qkeras_net, np.zeros((2, 16), dtype=np.int64))
    assert r["csim_bit_exact"] is None and "icpx" in r["csim_skipped"]


@pytest.mark.parametrize("board, backend, allowed", [("pynq-z2", "quartus", "vitis, vivado"),
                                                      ("de10-nano", "vitis", "quartus, oneapi")])
def test_backend_that_does_not_fit_the_board_says_which_do(qkeras_net, tmp_path, board, backend, allowed):
    with pytest.raises(BackendError, match=rf"backend '{backend}' does not fit board '{board}' .*use one of: {allowed}"):
        write_project(qkeras_net, load_board(board), backend, tmp_path / "prj")


@pytest.mark.parametrize("backend", ["vitis", "vivado", "quartus"])
@pytest.mark.parametrize("reuse", [2, 4])
def test_compressed_project_stores_only_the_nonzero_weights(qkeras_net, tmp_path, backend, reuse):
    net = copy.deepcopy(qkeras_net)
    for layer in net.weighted_layers():
        layer.reuse = reuse
    board = load_board(XILINX if backend != "quartus" else INTEL)
    p = write_project(net, board, backend, tmp_path / "prj")  # auto: reuse > 1 is the compressed form
    for layer in net.weighted_layers():
        index = p.model.graph[layer.name].index
        assert p.strategies[layer.name] == "Resource + Compression"
        nz = int(np.count_nonzero(layer.weight))
        triples = stored_triples(p.directory, index)
        rf = dense_plan(layer, backend)["ReuseFactor"]
        # every nonzero weight once, at its (input, output) place; hls4ml pads with zeros to a multiple of the reuse
        w = layer.weight * 2.0 ** -layer.weight_type.frac
        assert sorted((i, o) for i, o, v in triples if v != 0) == sorted(map(tuple, np.argwhere(w != 0).tolist()))
        assert all(w[i, o] == v for i, o, v in triples if v != 0)
        assert len(triples) == -(-nz // rf) * rf
        cfg = config_constants(p.directory, index)
        assert int(cfg["n_nonzeros"]) == len(triples) and int(cfg["reuse_factor"]) == rf
        # the multipliers dense_compressed instantiates: ceil(nonzeros / reuse), not ceil(n_in * n_out / reuse)
        assert len(triples) // rf == -(-nz // rf) < -(-layer.weight.size // rf) or nz == layer.weight.size


def test_compressed_form_is_refused_for_oneapi_with_the_reason(qkeras_net, tmp_path):
    with pytest.raises(BackendError, match=r"hls4ml 1.3 has no compressed dense for oneAPI"):
        write_project(qkeras_net, load_board("agilex7-f014"), "oneapi", tmp_path / "prj", form="compressed")


def test_missing_compiler_is_a_clear_error(qkeras_net, tmp_path, monkeypatch):
    p = write_project(qkeras_net, load_board(INTEL), "quartus", tmp_path / "prj")
    import codesign.tools

    monkeypatch.setattr(codesign.tools.shutil, "which", lambda name: None)
    with pytest.raises(ToolNotFoundError, match=r"C simulation needs g\+\+, which is not on PATH"):
        csim_check(p, qkeras_net, np.zeros((2, 16), dtype=np.int64))
