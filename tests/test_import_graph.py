"""The package's import graph, read with ``ast`` (nothing is imported, so this is fast): no
import cycle, and no module reaching into another module's private names.

``python tests/test_import_graph.py`` prints the cycles (among module-level imports, and
among all imports including those inside functions) and the private-name uses.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "mask_keras"

#: (module using it or "*", private module or module.name) -> why it is allowed; keep this short
PRIVATE_ALLOWED = {
    ("*", "mask_keras._tf"): "underscored on purpose: the one place TensorFlow is imported (GPUs hidden first)",
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <...> import``."""
    if not node.level:
        return node.module or ""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_level(tree: ast.Module) -> set[int]:
    """ids of the nodes run when the module is imported: not inside a function (class bodies
    and ``if``/``try``/``with`` blocks are), nor under ``if TYPE_CHECKING:``."""
    out, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        out.add(id(node))
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports(mod: str, path: Path, known: dict) -> list[tuple[str, bool, str, int]]:
    """(imported module, at module level?, name taken from it or "", line) per package import.

    ``from pkg import sub`` imports the module ``pkg.sub``. The ``__init__`` of the packages
    above an imported module (which Python runs first) is not counted as imported."""
    package = next(iter(known)).split(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = _module_level(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top, "", node.lineno) for a in node.names
                    if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, path, node)
            if target.split(".")[0] != package:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, id(node) in top, "", node.lineno) if sub in known
                           else (target, id(node) in top, a.name, node.lineno))
    return out


def graph(module_level_only: bool, root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package modules it imports (at module level only, or anywhere)."""
    known = modules(root)
    return {m: {t for t, top, _, _ in imports(m, p, known) if t != m and (top or not module_level_only)}
            for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(root: Path = ROOT, allowed: dict = PRIVATE_ALLOWED) -> list[tuple[str, str, int]]:
    """(module, what it uses, line) for each use of another module's private name not in
    ``allowed``: ``from .x import _y``, any import of a private module (``._x``), and ``x._y``
    on a name bound to another package module."""
    known = modules(root)
    package = root.name
    found = []
    for mod, path in known.items():
        for target, _, name, line in imports(mod, path, known):
            if target == mod:
                continue
            if any(_private(p) for p in target.split(".")[1:]):
                found.append((mod, target, line))
            elif name and _private(name):
                found.append((mod, f"{target}.{name}", line))
        tree = ast.parse(path.read_text(), str(path))
        bound = {}  # local name -> the package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(mod, path, node)
                bound.update({a.asname or a.name: f"{target}.{a.name}" for a in node.names
                              if f"{target}.{a.name}" in known})
            elif isinstance(node, ast.Import):
                bound.update({a.asname or package: a.name if a.asname else package for a in node.names
                              if a.name.split(".")[0] == package})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and bound.get(node.value.id, mod) != mod and _private(node.attr):
                found.append((mod, f"{bound[node.value.id]}.{node.attr}", node.lineno))

    def ok(use):
        mod, what, _ = use
        return any((who, name) in allowed for who in (mod, "*") for name in (what, what.rsplit(".", 1)[0]))

    return [u for u in found if not ok(u)]


def test_checks_find_what_they_look_for(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {"__init__.py": "from . import a\n",
             "a.py": "from . import b\nfrom ._c import thing\n",
             "b.py": "def f():\n    from . import a\n    return a._hidden\n",
             "_c.py": "from .sub.d import _secret\nthing = 1\n",
             "sub/__init__.py": "",
             "sub/d.py": "import os\n_secret = os.sep\n"}
    for name, text in files.items():
        (pkg / name).write_text(text)
    assert graph(True, pkg)["pkg.a"] == {"pkg.b", "pkg._c"}
    assert cycles(graph(True, pkg)) == []
    assert cycles(graph(False, pkg)) == [["pkg.a", "pkg.b"]]
    assert sorted(private_uses(pkg, {})) == [("pkg._c", "pkg.sub.d._secret", 1), ("pkg.a", "pkg._c", 2),
                                             ("pkg.b", "pkg.a._hidden", 3)]
    assert sorted(private_uses(pkg, {("*", "pkg._c"): "", ("pkg.b", "pkg.a._hidden"): ""})) == \
        [("pkg._c", "pkg.sub.d._secret", 1)]


def test_graph_sees_the_package():
    g = graph(module_level_only=True)
    assert {"mask_keras", "mask_keras.config", "mask_keras.models.backbones", "mask_keras.errors"} <= set(g)
    assert {"mask_keras.labels", "mask_keras.registry", "mask_keras.errors"} <= g["mask_keras.config"]
    assert g["mask_keras.errors"] == set()  # a leaf
    assert g["mask_keras.registry"] == {"mask_keras.errors"}


def test_no_import_cycle_among_module_level_imports():
    assert cycles(graph(module_level_only=True)) == []


def test_no_import_cycle_even_through_imports_inside_functions():
    """A function-level import is for a heavy or optional dependency, not to hide a cycle."""
    assert cycles(graph(module_level_only=False)) == []


def test_no_module_uses_another_modules_private_names():
    assert private_uses() == []


#: modules (of the package or bench/) that may use Keras internals -> why; keep this short
KERAS_INTERNALS_ALLOWED = {
    "mask_keras.keras_util": "the one home of the Keras internals that have no public API, each with its reason",
    "mask_keras.jax_backend.cpu_conv": "replaces Keras' JAX convolution and pooling functions for XLA:CPU; "
                                       "Keras has no public hook for a backend op",
    "mask_keras.jax_backend.host_init": "draws initial weights with numpy inside Keras' JAX random backend; "
                                        "no public hook",
}
#: private members of Keras objects the package once reached for (a public API or keras_util replaces each)
KERAS_PRIVATE_MEMBERS = {"_flatten_layers", "_learning_rate", "_iterations", "_tracker", "_trainable_variables",
                         "_non_trainable_variables", "_layers", "_functional", "_called", "_jax_state",
                         "_build_shapes_dict", "_compile_config", "_get_current_learning_rate"}


def keras_internal_uses(files) -> list[tuple[str, str, int]]:
    """(module, what, line) for each ``keras.src`` import or attribute chain and each use of a
    private member in :data:`KERAS_PRIVATE_MEMBERS`, outside :data:`KERAS_INTERNALS_ALLOWED`."""
    found = []
    for mod, path in files.items():
        if mod in KERAS_INTERNALS_ALLOWED:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras.src"):
                found.append((mod, node.module, node.lineno))
            elif isinstance(node, ast.Import):
                found += [(mod, a.name, node.lineno) for a in node.names if a.name.startswith("keras.src")]
            elif isinstance(node, ast.Attribute):
                if node.attr in KERAS_PRIVATE_MEMBERS:
                    found.append((mod, "." + node.attr, node.lineno))
                elif node.attr == "src" and isinstance(node.value, ast.Name) and node.value.id == "keras":
                    found.append((mod, "keras.src", node.lineno))
    return sorted(found)


def test_keras_internals_only_where_allowed(tmp_path):
    bench = {f"bench.{p.stem}": p for p in sorted((ROOT.parent / "bench").glob("*.py"))}
    assert keras_internal_uses({**modules(), **bench}) == []
    probe = tmp_path / "probe.py"
    probe.write_text("import keras\nfrom keras.src.ops import core\nx = keras.src.ops\n"
                     "def f(m):\n    return m._flatten_layers(), m.optimizer._learning_rate\n")
    assert keras_internal_uses({"probe": probe}) == [("probe", "._flatten_layers", 5),
                                                     ("probe", "._learning_rate", 5), ("probe", "keras.src", 3),
                                                     ("probe", "keras.src.ops", 2)]


#: what a function may import inside itself (a heavy or optional dependency), and why; every
#: other import sits at its module's top, where the dependency graph can be read
LAZY_ALLOWED = {
    "tensorflow": "seconds to import: `import mask_keras` and most commands stay without it",
    "mask_keras._tf": "TensorFlow (see above)",
    "mask_keras.pipeline": "imports TensorFlow (see above)",
    "optuna": "only `mask-keras tune` needs it",
    "sqlalchemy": "optuna's storage, only `mask-keras tune`",
    "mtcnn": "the face detector, in its own TensorFlow-backend process",
    "wandb": "only with --wandb",
    "keras_hub": "seconds to import, only for its backbones",
    "matplotlib": "only when a PNG is drawn",
    "onnxruntime": "the optional `export` extra",
    "ai_edge_litert": "the optional `export` extra",
    "uvicorn": "only `mask-keras serve`",
    "multiprocessing": "the synthetic generator's worker pool, only when generating",
}
#: modules whose function-level imports are all allowed, and why
LAZY_MODULES = {
    "mask_keras.cli": "a subcommand imports its modules when it runs: `mask-keras --help`, `evaluate` or "
                      "`synth` do not pay for TensorFlow and the rest",
    "mask_keras.jax_backend.distribute": "JAX only where the backend is JAX: the TF-backend export and "
                                         "detector processes import this module too",
    "mask_keras.jax_backend.cpu_conv": "patches Keras' JAX backend when installed (imports at install time)",
    "mask_keras.jax_backend.host_init": "patches Keras' JAX backend when installed (imports at install time)",
    "mask_keras.keras_util": "its one Keras internal, imported where used with the fallback beside it",
    "mask_keras.tune": "its search loop (the training code, TensorFlow) on first use (PEP 562 __getattr__): "
                       "the CLI's parser reads the tune package's storage names",
    "mask_keras.tune.search": "the training code (TensorFlow) in the default objective only: a worker with its "
                              "own objective does not import it",
}


def lazy_imports(root: Path = ROOT) -> list[tuple[str, str, int]]:
    """(module, imported name, line) of each import inside a function not allowed above."""
    found = []
    for mod, path in modules(root).items():
        if mod in LAZY_MODULES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        top = _module_level(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                if isinstance(node, ast.ImportFrom):
                    base = _resolve(mod, path, node)
                    names = [f"{base}.{a.name}" for a in node.names] if node.module is None else [base]
                else:
                    names = [a.name for a in node.names]
                for name in names:
                    if not any(name == ok or name.startswith(ok + ".") for ok in LAZY_ALLOWED):
                        found.append((mod, name, node.lineno))
    return sorted(found)


def test_function_level_imports_only_for_heavy_or_optional_dependencies(tmp_path):
    assert lazy_imports() == []
    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import json\ndef f():\n    import tensorflow\n    from . import b\n"
                              "    import csv\n    from ._tf import tf\n")
    (pkg / "b.py").write_text("")
    assert lazy_imports(pkg) == [("probe.a", "csv", 5), ("probe.a", "probe._tf", 6), ("probe.a", "probe.b", 4)]


#: modules longer than MAX_LINES lines of code (docstrings not counted), and the one concern that needs it
LONG_MODULES = {
    "mask_keras.data.synth.render": "one picture: the face, its gender and age cues and the four mask styles "
                                    "share the person's parameters and geometry",
    "mask_keras.models.backbones": "the backbone registry: 18 entries with their weights' source and input "
                                   "convention, and the offline weight checks, in one table",
}
MAX_LINES = 450


def code_lines(path) -> int:
    """Lines of a module outside its docstrings: the rule is about how many concerns a module
    holds, and the Args:/Returns:/Attributes: documentation (tests/test_api_docs.py) grows with
    the API, not with the concerns."""
    text = path.read_text()
    doc = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc.update(range(first.lineno, first.end_lineno + 1))
    return len(text.splitlines()) - len(doc)


def test_modules_stay_short_or_say_why():
    long = {m: code_lines(p) for m, p in modules().items()}
    long = {m: n for m, n in long.items() if n > MAX_LINES}
    assert sorted(set(long) - set(LONG_MODULES)) == [], long
    assert sorted(set(LONG_MODULES) - set(long)) == [], "no longer long: drop it from LONG_MODULES"


if __name__ == "__main__":
    for module_level_only in (True, False):
        print("module-level imports:" if module_level_only else "all imports (inside functions too):")
        for c in cycles(graph(module_level_only)) or [["none"]]:
            print("  cycle:", " ".join(c))
    for mod, what, line in private_uses():
        print(f"private: {mod}:{line} uses {what}")
