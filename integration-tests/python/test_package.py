"""The Python package's shape: its modules import each other without cycles,
counting every import (at module level or deferred into a function), but those
under ``if TYPE_CHECKING:``, which never run."""

import ast
import os

import cpy2py

PACKAGE_DIR = os.path.dirname(os.path.abspath(cpy2py.__file__))


def module_name(path):
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")]
    parts = relative.split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node):
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path, name):
    """The cpy2py modules ``name`` (at ``path``) imports, anywhere in it."""
    with open(path) as source:
        tree = ast.parse(source.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.If) and is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("cpy2py"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if not module.startswith("cpy2py"):
                    continue
                found.add(module)
                for alias in node.names:  # ``from . import errors`` imports a module
                    found.add(module + "." + alias.name)
                continue
            # statements inside this one: function and class bodies, branches, ...
            visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    visit(tree.body)
    return found


def package_graph():
    paths = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(directory, file)
                paths[module_name(path)] = path
    graph = {}
    for name, path in paths.items():
        graph[name] = {m for m in imports_of(path, name) if m in paths and m != name}
    return graph


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_imports_without_cycles():
    graph = package_graph()
    # a package imports its parent package first: that edge is not a cycle
    for name, imports in graph.items():
        imports.discard(name.rpartition(".")[0])
    assert "cpy2py.master" in graph and "cpy2py._routing" in graph, sorted(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_routing_table_the_registry_and_the_ids_are_leaves():
    graph = package_graph()
    assert graph["cpy2py._registry"] == set()
    for leaf in ("cpy2py._routing", "cpy2py.kernel_state", "cpy2py.errors"):
        allowed = {"cpy2py", "cpy2py._native", "cpy2py.errors", "cpy2py.kernel_state"}
        assert graph[leaf] <= allowed, (leaf, sorted(graph[leaf] - allowed))


def test_a_cycle_is_found_where_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def private_uses(path, name):
    """``module._name`` reads (and ``from module import _name``) of another cpy2py
    module's private names in the module at ``path``."""
    with open(path) as source:
        tree = ast.parse(source.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    modules = {}  # local name -> cpy2py module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                if node.module is None:
                    modules[alias.asname or alias.name] = module + "." + alias.name
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append("from %s import %s" % (module, alias.name))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append("%s.%s (line %d)" % (modules[node.value.id], node.attr, node.lineno))
    return found


def test_no_module_reaches_into_another_modules_privates():
    found = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(directory, file)
                uses = private_uses(path, module_name(path))
                if uses:
                    found[module_name(path)] = uses
    assert found == {}


def test_a_private_use_is_found_where_there_is_one(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("from . import other\nfrom .other import _hidden\nother._secret()\nother.public()\n")
    uses = private_uses(str(package / "mod.py"), "pkg.mod")
    assert uses == ["from pkg.other import _hidden", "pkg.other._secret (line 3)"]
