"""Every user-facing message of `core/`, read from the source with `ast` (no import, no server).

A message reaches users as an `AnimeBotError.user_message` or as a failed job's stored reason,
so the sources are:

- a `user_message=` argument of any call (an error, or a helper that builds one);
- an `error=` argument of a `transition(...)` call (a failed job's reason);
- a class-level `default_user_message = ...`.

Each source expression is resolved to one or more `Template`s: tuples of literal text and
`HOLE` (a part only known at run time). Resolution follows string literals, f-strings, `+`,
`a if c else b`, `a or b`, `x += ...`, module-level constants (also imported ones), local
variables, a parameter of the enclosing function (to the arguments of its calls in the same
scope, and its default), and a call of a core function (to its `return` values; `_scrub`,
which only cleans text, to its argument). Whatever else is a `HOLE`. `X.user_message` is a
pass-through (the message was counted where it was made).

`python -m tests.core_message_scan` lists what it finds.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"

HOLE: None = None
Part = str | None
Template = tuple[Part, ...]

PASS_THROUGH_CALLS = frozenset({"_scrub"})  # text cleaners: the message is their argument
_MAX_DEPTH = 12
_Scope = ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Found:
    """One user-facing message template and where it comes from."""

    template: Template
    where: str  # "core/x.py:123"


@dataclass
class _Module:
    name: str  # "core/x.py"
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    constants: dict[str, ast.expr] = field(default_factory=dict)


def normalize(parts: Iterator[Part] | tuple[Part, ...]) -> Template:
    """Adjacent literals merged, empty literals and repeated holes dropped."""
    out: list[Part] = []
    for part in parts:
        if part == "":
            continue
        if out and part is not HOLE and out[-1] is not HOLE:
            out[-1] = f"{out[-1]}{part}"
        elif not (part is HOLE and out and out[-1] is HOLE):
            out.append(part)
    return tuple(out)


def _concat(*choices: list[Template]) -> list[Template]:
    return [normalize(p for t in combo for p in t) for combo in itertools.product(*choices)]


class Scanner:
    def __init__(self, root: Path = CORE) -> None:
        self.modules = [self._load(root, path) for path in sorted(root.rglob("*.py"))]
        self.functions: dict[str, list[tuple[_Module, _Function]]] = {}
        self._following: set[tuple[int, str]] = set()  # (function, parameter) being resolved
        self.constants: dict[str, list[tuple[_Module, ast.expr]]] = {}
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.functions.setdefault(node.name, []).append((module, node))
            for name, value in module.constants.items():
                self.constants.setdefault(name, []).append((module, value))

    @staticmethod
    def _load(root: Path, path: Path) -> _Module:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module = _Module(str(path.relative_to(root.parent)), tree)
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                module.parents[child] = node
        for statement in tree.body:
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        module.constants[target.id] = statement.value
            elif (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and statement.value is not None
            ):
                module.constants[statement.target.id] = statement.value
        return module

    # -- sources ---------------------------------------------------------------------------

    def messages(self) -> list[Found]:
        found: list[Found] = []
        for module in self.modules:
            for node in ast.walk(module.tree):
                for expr in self._sources(node):
                    where = f"{module.name}:{expr.lineno}"
                    for template in self.resolve(module, expr, top=True):
                        found.append(Found(template, where))
        return found

    @staticmethod
    def _sources(node: ast.AST) -> Iterator[ast.expr]:
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "user_message" or (
                    keyword.arg == "error" and _call_name(node) == "transition"
                ):
                    yield keyword.value
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name)
                    and statement.targets[0].id == "default_user_message"
                ):
                    yield statement.value

    # -- resolution ------------------------------------------------------------------------

    def resolve(
        self, module: _Module, expr: ast.expr, *, top: bool = False, depth: int = 0
    ) -> list[Template]:
        """The templates `expr` can evaluate to (deduplicated, in a stable order)."""
        if depth > _MAX_DEPTH:
            return [(HOLE,)]
        templates = self._resolve(module, expr, top, depth + 1)
        return list(dict.fromkeys(normalize(t) for t in templates))

    def _resolve(self, module: _Module, expr: ast.expr, top: bool, depth: int) -> list[Template]:
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return []
            return [(expr.value,)] if isinstance(expr.value, str) else [(HOLE,)]
        if isinstance(expr, ast.JoinedStr):
            return _concat(*(self._formatted(module, part, depth) for part in expr.values))
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return _concat(
                self.resolve(module, expr.left, depth=depth),
                self.resolve(module, expr.right, depth=depth),
            )
        if isinstance(expr, ast.IfExp):
            return self.resolve(module, expr.body, top=top, depth=depth) + self.resolve(
                module, expr.orelse, top=top, depth=depth
            )
        if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):
            *first, last = (self.resolve(module, value, depth=depth) for value in expr.values)
            # `a or b`: an empty `a` is never the result
            return [t for choice in first for t in choice if t] + last
        if isinstance(expr, ast.Name):
            return self._name(module, expr, top, depth)
        if isinstance(expr, ast.Attribute):
            if expr.attr == "user_message":
                return []  # a message passed on: counted where it was made
            if expr.attr.isupper() and expr.attr in self.constants:
                return self._constant(expr.attr, depth)
            return [(HOLE,)]
        if isinstance(expr, ast.Call):
            return self._call(module, expr, top, depth)
        return [(HOLE,)]

    def _formatted(self, module: _Module, part: ast.expr, depth: int) -> list[Template]:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            return [(part.value,)]
        if (
            isinstance(part, ast.FormattedValue)
            and part.conversion == -1
            and part.format_spec is None
            and isinstance(part.value, ast.Name)
        ):
            # a variable that may be "" is run-time text like any other
            return [t or (HOLE,) for t in self.resolve(module, part.value, depth=depth)] or [
                (HOLE,)
            ]
        return [(HOLE,)]

    def _constant(self, name: str, depth: int) -> list[Template]:
        out: list[Template] = []
        for module, value in self.constants.get(name, []):
            out += self.resolve(module, value, depth=depth)
        return out or [(HOLE,)]

    def _call(self, module: _Module, call: ast.Call, top: bool, depth: int) -> list[Template]:
        name = _call_name(call)
        if name in PASS_THROUGH_CALLS and call.args:
            return self.resolve(module, call.args[0], top=top, depth=depth)
        if not top or name is None or name not in self.functions:
            return [(HOLE,)]
        out: list[Template] = []
        for owner, function in self.functions[name]:
            for node in _own_nodes(function):
                if isinstance(node, ast.Return) and node.value is not None:
                    out += self.resolve(owner, node.value, top=True, depth=depth)
        return out or [(HOLE,)]

    def _name(self, module: _Module, name: ast.Name, top: bool, depth: int) -> list[Template]:
        function = self._enclosing_function(module, name)
        if function is not None:
            found, templates = self._local(module, function, name.id, top, depth)
            if found:
                return templates
        if name.id in module.constants:
            return self.resolve(module, module.constants[name.id], depth=depth)
        if name.id.isupper() and name.id in self.constants:
            return self._constant(name.id, depth)
        return [(HOLE,)]

    def _local(
        self, module: _Module, function: _Function, name: str, top: bool, depth: int
    ) -> tuple[bool, list[Template]]:
        """(is `name` a parameter or local of `function`, what it can hold)."""
        found = False
        out: list[Template] = []
        params = _params(function)
        if name in params:
            found = True
            out += self._argument(module, function, name, top, depth)
        added: list[ast.expr] = []
        for node in _own_nodes(function):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                found = True
                out += self.resolve(module, node.value, top=top, depth=depth)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and (
                isinstance(node.target, ast.Name) and node.target.id == name
            ):
                found = True
                if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
                    added.append(node.value)
                elif node.value is not None:
                    out += self.resolve(module, node.value, top=top, depth=depth)
        for value in added:  # `name += value`: the value so far, then with it appended
            out += _concat(out, self.resolve(module, value, depth=depth))
        if not found:
            outer = self._enclosing_function(module, function)
            if outer is not None:
                return self._local(module, outer, name, top, depth)
        return found, out

    def _argument(
        self, module: _Module, function: _Function, name: str, top: bool, depth: int
    ) -> list[Template]:
        """What the calls of `function` (in the scope that defines it) pass as `name`."""
        key = (id(function), name)
        if key in self._following:
            return []  # a call passing the parameter on to itself: nothing new
        self._following.add(key)
        try:
            return self._arguments(module, function, name, top, depth)
        finally:
            self._following.discard(key)

    def _arguments(
        self, module: _Module, function: _Function, name: str, top: bool, depth: int
    ) -> list[Template]:
        params = _params(function)
        position = params.index(name)
        method = bool(params) and params[0] in ("self", "cls")
        out: list[Template] = []
        callers = 0
        scope = module.parents.get(function, module.tree)
        for call in ast.walk(scope):
            if not isinstance(call, ast.Call) or _call_name(call) != function.name:
                continue
            callers += 1
            index = position - 1 if method and isinstance(call.func, ast.Attribute) else position
            value = next((k.value for k in call.keywords if k.arg == name), None)
            if value is None and 0 <= index < len(call.args):
                value = call.args[index]
            if value is not None:
                out += self.resolve(module, value, top=top, depth=depth)
        default = _default(function, name)
        if default is not None:
            out += self.resolve(module, default, depth=depth)
        if not callers and not out and name != "user_message":
            out.append((HOLE,))
        return out

    def _enclosing_function(self, module: _Module, node: ast.AST) -> _Function | None:
        parent = module.parents.get(node)
        while parent is not None and not isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
            parent = module.parents.get(parent)
        return parent


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _params(function: _Function) -> list[str]:
    args = function.args
    return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]


def _default(function: _Function, name: str) -> ast.expr | None:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    offset = len(positional) - len(args.defaults)
    for index, arg in enumerate(positional):
        if arg.arg == name and index >= offset:
            return args.defaults[index - offset]
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if arg.arg == name:
            return default
    return None


def _own_nodes(function: _Function) -> Iterator[ast.AST]:
    """The nodes of `function`'s body, not those of functions or classes nested in it."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def core_messages() -> list[Found]:
    """Every user-facing message template of core, with its first source location."""
    first: dict[Template, Found] = {}
    for found in Scanner().messages():
        first.setdefault(found.template, found)
    return sorted(first.values(), key=lambda f: f.where)


def show(template: Template) -> str:
    return "".join("{}" if part is HOLE else part for part in template)


if __name__ == "__main__":
    for item in core_messages():
        print(f"{item.where:32} {show(item.template)}")
