"""The C-simulation build: hls4ml's generated layer functions compiled as units of their own, cached."""

import re
import shutil

import numpy as np
import pytest

from codesign.board import load_board
from codesign.core.verify import verification_inputs
from codesign.errors import ToolFailedError
from codesign.tools import find_gpp
from hls import build
from hls.build import CODE_GEN, build_library, cache_key, compiler_flags, split_code_gen
from hls.cached import write_project_cached
from hls.csim import csim_check


@pytest.fixture(scope="session")
def digits_da(digits_q, tmp_path_factory):
    """The digits MLP's Vitis project at reuse 1 (distributed arithmetic), and a cache folder."""
    root = tmp_path_factory.mktemp("digits_da")
    project, _ = write_project_cached(digits_q, load_board("arty-a7-35"), "vitis", root / "prj", root / "projects")
    return project, root


def _functions(code_gen: str) -> dict[str, str]:
    return {m[1]: m[0] for m in re.finditer(r"^template <[^>]*>\nvoid (dense_da_\d+)\(.*?^\}\n", code_gen, re.M | re.S)}


def _in_order(lines: list[str], text: str) -> bool:
    pos = 0
    for line in lines:
        pos = text.find(line + "\n", pos)
        if pos < 0:
            return False
        pos += len(line)
    return True


@pytest.mark.parametrize("part_lines", [100_000, 40])
def test_each_generated_layer_function_moves_verbatim_into_a_unit(digits_da, tmp_path, monkeypatch, part_lines):
    project, _ = digits_da
    monkeypatch.setattr(build, "PART_LINES", part_lines)
    shutil.copytree(project.directory / "firmware", tmp_path / "firmware")
    original = (project.directory / CODE_GEN).read_text()
    units = split_code_gen(tmp_path)
    assert units is not None and units[-1].source == "firmware/myproject.cpp"
    moved = "".join((tmp_path / u.source).read_text() for u in units[:-1])
    functions = _functions(original)
    assert len(functions) == 3
    for name, code in functions.items():
        if part_lines > code.count("\n"):
            assert code in moved  # verbatim, whole
        else:  # cut into parts: every generated line verbatim and in its order
            body = [line for line in code.split("\n")[2:-2] if line.strip() and "#pragma" not in line]
            assert re.search(rf"^static void {name}_part1\(", moved, re.M) and _in_order(body, moved)
        assert re.search(rf"^template void {name}<\w+, \w+>\(", moved, re.M)  # instantiated for its caller
    header = (tmp_path / CODE_GEN).read_text()
    assert all(re.search(rf"^void {n}\([^)]*\); // defined in", header, re.M) for n in functions)
    assert (tmp_path / "firmware" / "myproject.cpp").read_text() == (project.directory / "firmware" / "myproject.cpp").read_text()


@pytest.mark.slow
def test_layer_functions_cut_into_parts_simulate_bit_exact(digits_da, digits_q, tmp_path, monkeypatch):
    project, _ = digits_da
    monkeypatch.setattr(build, "PART_LINES", 40)
    r = csim_check(project, digits_q, verification_inputs(digits_q, None, 2000), cache=tmp_path / "csim")
    assert r["split"] and not r["cached"] and r["csim_bit_exact"] and r["samples"] == 2000


def test_second_build_of_an_unchanged_project_compiles_nothing(small_mlp, tmp_path):
    board = load_board("arty-a7-35")
    project, _ = write_project_cached(small_mlp, board, "vitis", tmp_path / "prj", tmp_path / "projects")
    first = build_library(project.directory, "vitis", tmp_path / "csim")
    assert not first.cached and first.split and first.units >= 3  # layer unit(s), myproject.cpp, the bridge
    # the same project written again elsewhere: same sources, so the same library
    again, reused = write_project_cached(small_mlp, board, "vitis", tmp_path / "prj2", tmp_path / "projects")
    assert reused
    second = build_library(again.directory, "vitis", tmp_path / "csim")
    assert second.cached and second.path == first.path and second.compile_s == 0.0
    r = csim_check(again, small_mlp, verification_inputs(small_mlp, None, 2000), cache=tmp_path / "csim")
    assert r["cached"] and r["csim_bit_exact"] and r["samples"] == 2000


def test_cache_key_follows_every_source_byte_and_the_flags(digits_da, tmp_path):
    project, _ = digits_da
    shutil.copytree(project.directory, tmp_path / "p")
    gpp = find_gpp()
    flags = compiler_flags(gpp, "vitis")
    key = cache_key(tmp_path / "p", gpp, flags)
    assert cache_key(tmp_path / "p", gpp, compiler_flags(gpp, "vitis", "-O2")) != key
    (tmp_path / "p" / "README.md").write_text("not a source")  # outside firmware/: not part of the library
    assert cache_key(tmp_path / "p", gpp, flags) == key
    with open(tmp_path / "p" / "firmware" / "defines.h", "a") as f:
        f.write("\n")
    assert cache_key(tmp_path / "p", gpp, flags) != key


def test_a_failing_unit_is_named_in_one_line(digits_da, tmp_path):
    project, _ = digits_da
    shutil.copytree(project.directory, tmp_path / "p")
    top = tmp_path / "p" / "firmware" / "myproject.cpp"
    top.write_text(top.read_text().replace("// NETWORK INSTANTIATION", "not C++;", 1))
    with pytest.raises(ToolFailedError, match=r"^C simulation build \(firmware/myproject\.cpp\) failed: .*error"):
        # every unit at once: the broken one fails first and stops the others
        build_library(tmp_path / "p", "vitis", tmp_path / "csim", jobs=8)
    assert not [p for p in (tmp_path / "csim").iterdir()]  # nothing half-built is left in the cache


def test_project_from_the_cache_is_the_project_written(digits_da, digits_q, tmp_path):
    project, root = digits_da
    again, reused = write_project_cached(digits_q, load_board("arty-a7-35"), "vitis", tmp_path / "prj", root / "projects")
    assert reused and again.model is None and again.strategies == project.strategies
    files = sorted(p.relative_to(project.directory) for p in project.directory.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.directory) for p in again.directory.rglob("*") if p.is_file())
    for f in files:
        if f.name != "hls4ml_config.yml":
            assert (project.directory / f).read_bytes() == (again.directory / f).read_bytes(), f
    assert f"OutputDir: {again.directory.resolve()}" in (again.directory / "hls4ml_config.yml").read_text()


@pytest.mark.parametrize("n", [1, 5, 300])
def test_fewer_verification_vectors_than_data_and_corners_are_corners_first(digits_q, digits, n):
    from codesign.core import fixed

    corners = fixed.corner_values(digits_q.input_type)
    data = digits_q.quantize_input(digits.X_test).reshape(len(digits.X_test), -1)
    q = verification_inputs(digits_q, digits.X_test, n).reshape(n, -1)
    k = min(n, len(corners))
    assert np.array_equal(q[:k], np.repeat(corners[:k, None], q.shape[1], axis=1))  # every element at one corner
    assert np.array_equal(q[k:k + len(data)], data[:n - k])  # then the data


def test_more_verification_vectors_are_the_data_the_corners_then_random(digits_q, digits):
    from codesign.core import fixed

    corners = fixed.corner_values(digits_q.input_type)
    data = digits_q.quantize_input(digits.X_test).reshape(len(digits.X_test), -1)
    q = verification_inputs(digits_q, digits.X_test, 2000).reshape(2000, -1)
    assert np.array_equal(q[:len(data)], data)
    assert np.array_equal(q[len(data):len(data) + len(corners)], np.repeat(corners[:, None], q.shape[1], axis=1))


@pytest.mark.slow
def test_hls4ml_16x100x5_mlp_hls_step_is_bit_exact_and_a_second_run_compiles_nothing(tmp_path):
    from codesign.app.artifact import Artifact
    from codesign.app.flow import step_compress, step_hls
    from codesign.budget import Budget

    from tests.conftest import MODELS

    art = Artifact(tmp_path / "mlp")
    art.claim()
    step_compress(art, str(MODELS / "KERAS_dense_16x100x100x100x100x100x5.json"), None,
                  Budget.parse(None, load_board("vcu118")))
    cold = step_hls(art, "vitis")
    assert cold["csim_bit_exact"] and cold["samples"] == 10000 and cold["split"] and not cold["cached"]
    warm = step_hls(art, "vitis")
    assert warm["csim_bit_exact"] and warm["cached"] and warm["project_from_cache"] and warm["compile_s"] == 0.0
