"""The two layers, enforced on the source: the library never imports the lab, and the lab (and the
examples) import from the library only its public names.

Library: every module of ``pyro_flowvi`` outside ``pyro_flowvi.lab``.  Public: a library module
whose dotted path has no part starting with ``_``, and a name in ``pyro_flowvi.__all__`` or in the
``__all__`` of such a module (or one of its public submodules).  Every import is checked,
including those inside functions.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_flowvi"
LAB = "pyro_flowvi.lab"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_lab(name: str) -> bool:
    return name == LAB or name.startswith(LAB + ".")


def imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(module, name or None, line)`` for every import in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path) if path.is_relative_to(ROOT / "pyro_flowvi") else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return found


def declared_all(module: str) -> set[str]:
    """The literal ``__all__`` of a package module (empty when it has none)."""
    path = MODULES.get(module)
    if path is None:
        return set()
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(getattr(t, "id", None) == "__all__" for t in targets) and node.value is not None:
            return set(ast.literal_eval(node.value))
    return set()


def is_public_module(module: str) -> bool:
    return module in MODULES and not any(part.startswith("_") for part in module.split("."))


def violations(path: Path) -> list[str]:
    """What ``path`` (a lab module or an example) imports from the library that is not public."""
    bad = []
    for module, name, line in imports(path):
        if not (module == "pyro_flowvi" or module.startswith("pyro_flowvi.")) or is_lab(module):
            continue
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
        if not is_public_module(module):
            bad.append(f"{where}: {module} is not a public library module")
        elif name is not None and name not in declared_all(module) \
                and not is_public_module(f"{module}.{name}"):
            bad.append(f"{where}: {module}.{name} is not in {module}.__all__")
    return bad


LIBRARY = sorted(p for m, p in MODULES.items() if not is_lab(m))
LAB_MODULES = sorted(p for m, p in MODULES.items() if is_lab(m))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_the_layers_are_both_there():
    assert len(LIBRARY) > 30 and len(LAB_MODULES) > 20
    assert {"pyro_flowvi.lab.cli", "pyro_flowvi.lab.experiments.banana"} <= set(MODULES)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_the_lab(path):
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
           for module, name, line in imports(path)
           if is_lab(module) or (module == "pyro_flowvi" and name == "lab")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", LAB_MODULES + EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_lab_and_the_examples_use_public_names_only(path):
    bad = violations(path)
    assert not bad, "\n".join(bad)


def test_library_tests_do_not_import_the_lab():
    """Tests of the library test the library: tests/lab holds the lab's."""
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.is_relative_to(ROOT / "tests" / "lab"):
            continue
        bad += [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                for module, name, line in imports(path) if is_lab(module)]
    assert not bad, "\n".join(bad)


def test_the_checker_catches_what_it_should(tmp_path):
    """A private name, a private module and a name outside ``__all__`` are all reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("from pyro_flowvi.flows import _REGISTRY\n"
                     "from pyro_flowvi.transforms.base import torch\n"
                     "import pyro_flowvi._nowhere\n"
                     "from pyro_flowvi import AutoFlowGuide, transforms\n")
    bad = violations(probe)
    assert len(bad) == 3, bad
