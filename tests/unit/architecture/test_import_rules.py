"""The rooms of ARCHITECTURE.md and who may import whom, checked on the source (every import, even lazy ones)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROJECT = {"lifecycle", "registry", "data_checks", "training", "evaluation", "serving", "tasks", "flows", "slm_cli",
           "reporting"}
ALLOWED = {
    "lifecycle": set(),
    "registry": {"lifecycle"},
    "data_checks": {"lifecycle"},
    "training": {"lifecycle"},
    "evaluation": {"lifecycle", "serving"},
    "serving": {"lifecycle", "registry"},
    "reporting": {"lifecycle", "registry"},
    "tasks": {"lifecycle", "registry", "data_checks", "training", "evaluation", "serving", "reporting"},
    "flows": {"lifecycle", "tasks"},
}
# Third-party libraries only one room may use.
EXCLUSIVE = {"great_expectations": {"data_checks"}, "evidently": {"data_checks"}, "prefect": {"tasks", "flows"}}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_only_what_it_may(room):
    violations = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for name in imports_of(path):
            if name in PROJECT and name != room and name not in ALLOWED[room]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
            if name in EXCLUSIVE and room not in EXCLUSIVE[name]:
                violations.append(f"{path.relative_to(ROOT)} imports {name} (only {sorted(EXCLUSIVE[name])} may)")
    assert not violations, "\n".join(violations)
