"""The core's import rules, read from every import (module-level or inside a function, and module
names in strings such as ``"agedistill_core.stages:run_crops"``; type-only imports under
``TYPE_CHECKING`` do not count):

* folders: between the top-level folders and modules of ``agedistill_core`` imports run downward
  only, in the order of ``FOLDERS`` (one table, bottom to top); within a folder the module layers
  below decide;
* modules: every import runs downward or within a layer of ``LAYERS``;
* no import cycles; the core never imports dagster.

The module layers (README, "Folders and layers"), bottom to top:
  0 foundation   errors, registry, progress (bars and throttled progress lines)
  1 io and base  images, shards; ages (groups and bands), metrics
  2 blocks       labeltable (the label table's reader), datasets, faces (detection, alignment,
                 framing), corruptions (the 13 functions), students' networks, augmentation,
                 checkpoints, losses, DDP
  3 models       inference.student / export / member (a trained student), teacher members and
                 ensemble; settings (a profile is validated against the registries of layers 2 and 3)
  4 stages       faces.crops, teacher.label / vmage / report / measure, corruptions.lfwc,
                 students.data / engine / train, inference.predict / ship, evaluate.*
  5 top          stages (the stage functions), pipeline (the stage table), dvcyaml, cli
"""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "agedistill_core"

# The top-level folders and modules of agedistill_core, bottom to top: a module may import only
# from its own folder and from folders listed before it.
FOLDERS = (
    "errors", "registry", "progress",            # foundation
    "images", "shards",                          # io: decoding, atomic writes, Parquet shards
    "ages", "metrics", "settings", "labeltable",  # low modules everyone may import
    "datasets", "corruptions", "faces",          # families: data sets, corruptions, framing (the crops stage)
    "teacher",                                   # the teacher, the label stage, the label table
    "students",                                  # networks and their training (learns from the teacher's labels)
    "inference",                                 # a trained student used: loader, predict, export, ship
    "evaluate",                                  # benchmark, robustness, report, the group protocol
    "stages", "pipeline", "dvcyaml", "cli",      # the stage functions, the stage table, its faces
)

LAYERS = {
    "errors": 0, "registry": 0, "progress": 0,
    "images": 1, "shards": 1, "ages": 1, "metrics": 1,
    "labeltable": 2, "datasets": 2, "faces": 2, "corruptions": 2,
    "students.zoo": 2, "students.augment": 2, "students.checkpoint": 2, "students.losses": 2,
    "students.distributed": 2,
    "inference.student": 3, "inference.export": 3, "inference.member": 3, "teacher": 3, "settings": 3,
    "faces.crops": 4, "teacher.label": 4, "teacher.vmage": 4, "teacher.report": 4, "teacher.measure": 4,
    "corruptions.lfwc": 4, "students": 4, "inference": 4, "evaluate": 4,
    "stages": 5, "pipeline": 5, "dvcyaml": 5, "cli": 5,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(CORE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer(module: str) -> int:
    """The layer of ``module`` (relative to agedistill_core): its longest listed prefix."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(f"agedistill_core.{module} has no layer in LAYERS: add it")


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: they never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports(path: Path) -> set[str]:
    """Every agedistill_core module ``path`` imports (relative names), at any depth in the file,
    including modules named in strings (``importlib.import_module("agedistill_core.x")``)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("agedistill_core."):
            found.add(node.value.partition(":")[0])   # "agedistill_core.stages:run_crops" names a module
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found.add("agedistill_core." + mod if mod else "agedistill_core")
                found |= {f"agedistill_core.{mod}.{a.name}" if mod else f"agedistill_core.{a.name}"
                          for a in node.names}
            elif node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    modules = {m.removeprefix("agedistill_core.") for m in found if m.startswith("agedistill_core.")}
    return {m for m in modules if _exists(m)} | ({"dagster"} if any(m.split(".")[0] == "dagster" for m in found)
                                                 else set())


def _exists(module: str) -> bool:
    p = CORE.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


GRAPH = {module_name(p): imports(p) for p in sorted(CORE.rglob("*.py")) if p.parent != CORE or p.name != "__init__.py"}


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
            for m, deps in graph.items() for d in sorted(deps - {"dagster"}) if layer(d) > layer(m)]


def folder(module: str) -> str:
    """The top-level folder (or module) of ``module``, relative to agedistill_core."""
    return module.split(".")[0]


def registry_lookups() -> set[str]:
    """The registries settings look names up in when a profile is validated (``REGISTRIES``): the
    one reference from a low module to the families, by name, so that a newly registered
    detector, student or member is valid without an edit to settings."""
    from agedistill_core.settings import REGISTRIES

    return {module.removeprefix("agedistill_core.") for module, _ in REGISTRIES.values()}


def upward_folders(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: k for k, name in enumerate(FOLDERS)}
    lookups = registry_lookups()
    return [f"{m} ({folder(m)}/) imports {d} ({folder(d)}/, above it in FOLDERS)"
            for m, deps in graph.items() for d in sorted(deps - {"dagster"})
            if folder(d) != folder(m) and rank[folder(d)] > rank[folder(m)]
            and not (folder(m) == "settings" and d in lookups)]


def test_every_folder_is_in_the_folder_table():
    assert sorted({folder(m) for m in GRAPH} - set(FOLDERS)) == []
    assert len(set(FOLDERS)) == len(FOLDERS)


def test_no_import_between_folders_runs_up():
    assert upward_folders(GRAPH) == []


def test_settings_look_up_only_registries():
    """Settings' upward references are exactly its registry lookups: each names a registry."""
    import importlib

    from agedistill_core.settings import REGISTRIES

    for module, attr in REGISTRIES.values():
        assert hasattr(importlib.import_module(module), attr), (module, attr)


def test_the_folder_rule_sees_an_upward_import():
    graph = {"teacher.members": {"students.augment"}, "students.train": {"teacher.label"}}
    assert upward_folders(graph) == ["teacher.members (teacher/) imports students.augment "
                                     "(students/, above it in FOLDERS)"]


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer(module)


def test_the_core_never_imports_dagster():
    assert [m for m, deps in GRAPH.items() if "dagster" in deps] == []


def test_no_import_runs_upward():
    assert upward(GRAPH) == []


def test_no_import_cycles():
    # a module importing a name from its own package's __init__ is not counted (the package
    # imports the module to export it); a package's __init__ importing its modules is.
    def edges(m):
        return {d for d in GRAPH.get(m, ()) if d != m and d in GRAPH and not m.startswith(d + ".")}

    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(edges(m)):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_readme_lists_the_folders_in_order():
    """README's "Folders and layers" table names the folders of ``FOLDERS``, in its order."""
    import re

    text = (CORE.parent / "README.md").read_text()
    section = text[text.index("### Folders and layers"):]
    section = section[:section.index("\n\n", section.index("| folder or module |"))]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    shown = [name.removesuffix(".py").removesuffix("/") for row in rows for name in re.findall(r"`([^`]+)`", row)]
    assert shown == list(FOLDERS)
