"""Imports run one way between the top-level packages (STYLE.md habit 14).

Bottom to top: safety < data < sim < policy < real. A module may import its own package and
those below it, never one above; safety imports none of the others. Every import statement
counts, at module level or inside a function: a lazy import still makes the lower package need
the upper one. bench/ and tests/ may import anything. policy/cli.py's subcommand table names
modules as strings (the console script dispatches to every package); that is not an import.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ORDER = ("safety", "data", "sim", "policy", "real")
ROOT = Path(__file__).resolve().parents[1]


def _sources() -> list[Path]:
    return sorted(f for pkg in ORDER for f in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str) -> list[tuple[int, str, str]]:
    """Every import in ``source`` as (line, imported module, statement), anywhere in the file.

    Relative imports are resolved against ``module`` (the importing module's dotted name);
    ``from a import b`` yields ``a.b`` too, since ``b`` may be a submodule.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out += [(node.lineno, name, ast.unparse(node)) for name in names if name]
    return out


def layering_violations(path: Path, source: str) -> list[str]:
    """Imports in ``path`` (a file under one of ORDER's packages) of a package above its own."""
    own = path.relative_to(ROOT).parts[0]
    rel = path.relative_to(ROOT).as_posix()
    found = {}
    for line, name, statement in imports(source, _module_name(path)):
        top = name.split(".")[0]
        if top in ORDER and ORDER.index(top) > ORDER.index(own):
            found[line, top] = f"{rel}:{line}: `{statement}` imports {top}, which sits above {own}"
    return list(found.values())


def test_top_level_packages_are_the_ordered_ones():
    """A new top-level package has to take its place in ORDER before it is installed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} == set(ORDER)


def test_no_package_imports_one_above_it():
    violations = [v for f in _sources() for v in layering_violations(f, f.read_text())]
    assert not violations, f"imports against the order {' < '.join(ORDER)}:\n" + "\n".join(
        violations
    )


def test_safety_imports_none_of_the_other_packages():
    found = [
        f"{f.relative_to(ROOT).as_posix()}:{line}: `{statement}`"
        for f in sorted((ROOT / "safety").rglob("*.py"))
        for line, name, statement in imports(f.read_text(), _module_name(f))
        if name.split(".")[0] in ORDER[1:]
    ]
    assert not found, "safety imports other armvla packages:\n" + "\n".join(found)


def test_no_two_modules_import_each_other():
    modules = {_module_name(f): f for f in _sources()}
    uses = {
        m: {name for _, name, _ in imports(f.read_text(), m) if name in modules and name != m}
        for m, f in modules.items()
    }
    mutual = sorted(f"{a} <-> {b}" for a in uses for b in uses[a] if a < b and a in uses[b])
    assert not mutual, "modules that import each other:\n" + "\n".join(mutual)


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("import numpy\n\nfrom policy.io import obs_to_batch\n", 3),
        ("import numpy\n\n\ndef f():\n    import policy.checkpoint\n", 5),
        ("def f():\n    if True:\n        from real import arm\n", 3),
    ],
)
def test_the_check_finds_an_upward_import_anywhere_in_a_file(source, line):
    [message] = layering_violations(ROOT / "sim" / "generate.py", source)
    assert message.startswith(f"sim/generate.py:{line}: `")
    assert "above sim" in message


def test_the_check_allows_imports_downward_and_within_a_package():
    source = "from safety import so101\nfrom data.keys import TASK\nfrom . import registry\n"
    assert layering_violations(ROOT / "sim" / "generate.py", source) == []
    source = "import policy.checkpoint\nfrom sim import make_env\nfrom safety.gate import Reason\n"
    assert layering_violations(ROOT / "real" / "run.py", source) == []
    [message] = layering_violations(ROOT / "safety" / "gate.py", "from data import keys\n")
    assert message.endswith("imports data, which sits above safety")
