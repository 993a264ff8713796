"""The parts import only what docs/architecture.md allows: read every module's imports (at any depth)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# part -> parts it must never import (docs/architecture.md, "The rules")
FORBIDDEN = {
    "core": {"importers", "compress", "app", "hls", "rtl_sim", "common"},
    "common": {"core", "importers", "compress", "app", "hls", "rtl_sim"},
    "importers": {"compress", "app", "hls", "rtl_sim"},
    "compress": {"app", "hls", "rtl_sim"},
    "hls": {"rtl_sim", "importers", "compress", "app"},
    "rtl_sim": {"hls", "importers", "compress", "app"},
    "app": set(),
}
ALLOWED_COMMON = {"codesign.errors"}  # the error types are shared by every part, the core included


def part_of(module: str) -> str | None:
    top = module.split(".")
    if top[0] in ("hls", "rtl_sim"):
        return top[0]
    if top[0] != "codesign":
        return None
    if len(top) > 1 and top[1] in ("core", "importers", "compress", "app"):
        return top[1]
    return "common" if len(top) > 1 else "api"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every module an import statement in the source names (relative imports resolved)."""
    tree = ast.parse(source)
    pkg = module.split(".")
    if not is_package:
        pkg = pkg[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names]  # `from codesign import flow` names a module
    return out


SOURCES = sorted(p for d in ("codesign", "hls", "rtl_sim") for p in (ROOT / d).rglob("*.py"))


def test_the_parts_exist_as_folders():
    for d in ("codesign/core", "codesign/importers", "codesign/compress", "codesign/app", "hls", "rtl_sim", "boards"):
        assert (ROOT / d).is_dir(), d


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` that its part must not make."""
    me = part_of(module)
    if me in (None, "api"):
        return []  # codesign/__init__.py is the public API: it may name any part
    bad = []
    for mod in imported_modules(module, source, is_package):
        other = part_of(mod)
        if other in (None, me, "api") or any(mod == a or mod.startswith(a + ".") for a in ALLOWED_COMMON):
            continue
        if other in FORBIDDEN[me]:
            bad.append(mod)
    return sorted(set(bad))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_no_part_it_must_not(path):
    bad = violations(module_name(path), path.read_text(), path.name == "__init__.py")
    assert not bad, f"{module_name(path)} imports {bad}; see docs/architecture.md"


@pytest.mark.parametrize("module, source", [
    ("codesign.core.network", "from codesign.compress.cost import network_cost"),
    ("codesign.core.network", "def f():\n    from ..importers import load"),  # relative, inside a function
    ("hls.project", "import rtl_sim.verilog"),
    ("codesign.importers.load", "from codesign.compress import search"),
    ("rtl_sim.synth", "from codesign.importers.builtin import cache_dir"),
])
def test_the_import_check_catches_a_backwards_import(module, source):
    assert violations(module, source)
