"""Follow one parameter of one function through the package's code, statically, and count modules.

Usage::

    python scripts/param_walk.py mlops_ray.pipeline.run:run_pipeline cfg
    python scripts/param_walk.py mlops_ray.pipeline.stages:train snapshot --ref 4e85820 --json

The question it answers (issue #15): *a newcomer reads ``run_pipeline`` and follows ``cfg`` into
every function it is handed to; how many modules do they open, and how often do they have to go
back to a module they already had open?*

What it does (stdlib ``ast`` only, nothing is imported or executed):

* Starts at the function and tracks its parameter. Within a function the tracked value is the
  parameter name, simple aliases of it (``c = cfg``; ``a, c = x, cfg``) and, inside a class,
  ``self.<attr>`` attributes that were assigned the tracked value in ``__init__``.
* Every call whose argument (positional, keyword, ``*x``/``**x`` excluded) *is* the tracked value
  is resolved to its definition inside the package and followed, tracking the callee's parameter
  that received it (positional index, or keyword name; ``self``/``cls`` skipped for methods).
  With ``--attrs`` (the JSON always carries both), an argument that is an attribute chain of the
  tracked value (``cfg.data``, ``cfg.registry.model_name``) counts too: the config's parts are
  followed as well as the whole.
* Call targets resolved: names defined in the module; ``from x import f``; ``import x as y;
  y.f(...)``; ``from pkg import module; module.f(...)``; re-exports through another module's
  imports (``from pkg import f`` where ``pkg/__init__`` imports ``f``); relative imports;
  function-local imports (and imports under ``if TYPE_CHECKING:``); functions nested in an
  enclosing function; ``self.m(...)``/``cls.m(...)`` within a class (through base classes defined
  in the package); ``C.m(...)`` on a class; a constructor ``C(cfg)`` -> ``C.__init__`` (inherited
  ``__init__`` too; a class without ``__init__`` maps arguments onto its annotated fields in order,
  the dataclass rule), after which every method of ``C`` that reads the attribute that received
  the value (``self.cfg``) is followed.
* Closures and lambdas defined inside a followed function are read as part of it (a reader of the
  function reads them); a nested function or lambda that rebinds the tracked name as its own
  parameter shadows it. A nested function *called* with the value is followed like any other.
* With ``--typed`` (off by default, so that code with and code without annotations are measured
  the same way): ``p.m(...)`` where ``p`` is a parameter annotated with a class of the package is
  resolved to that class's method (e.g. ``ctx.source(cfg)`` with ``ctx: Context``).

What it does not follow (an approximation of a reader, not of the program):

* dynamic dispatch: ``obj.m(cfg)`` on anything but ``self``/``cls``/a class name (or, with
  ``--typed``, an annotated parameter); overriding subclasses;
* callbacks passed as values and called later (``Step("x", self.train)``, ``partial(f, cfg)``,
  ``executor.submit(f, cfg)``, ``ray.remote``), registry or dict lookups (``KINDS[name](cfg)``),
  ``getattr``; methods called on the tracked value itself (``cfg.model_dump()``);
* values that flow through containers, return values or attributes other than the ``self.<attr>``
  rule above; ``*args``/``**kwargs`` forwarding;
* calls outside the package (they are neither followed nor counted).

The walk is read as a reader would read it: depth first, in source order; after a callee's
module, the reader goes back up to the caller's module only when the caller hands the value on
again (a return with nothing more to follow there is not a move). Each (function, tracked name)
is explored once; a later call to an already explored function is still a move into its module
(the reader opens it again) but is not explored again.

Counts (a *move* is a change of the module the reader has open):

* ``modules``: distinct modules holding a followed function, in DFS order of first visit;
* ``transitions``: all moves, in order (``A -> B``), down into callees and back up to callers;
* ``climbs``: moves into a module that is on the current DFS call path, i.e. going back up to a
  caller's module to read on (in code without import cycles these are exactly the returns);
* ``revisits``: moves into a module visited earlier in the walk (every climb is a revisit, and so
  is a descent into a module already read).

``--ref GIT_REF`` analyses ``git archive REF <package>`` extracted to a temporary directory.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FuncNode = ast.FunctionDef | ast.AsyncFunctionDef


# ----------------------------------------------------------------------------------------- the index
@dataclass
class Func:
    module: str
    qualname: str
    node: FuncNode | ast.Lambda
    cls: Cls | None = None  # the class it is a method of
    parent: Func | None = None  # the enclosing function, for a nested one


@dataclass
class Cls:
    module: str
    qualname: str
    node: ast.ClassDef
    methods: dict[str, Func] = field(default_factory=dict)


@dataclass
class Module:
    name: str
    is_pkg: bool
    tree: ast.Module
    defs: dict[str, Func | Cls] = field(default_factory=dict)
    imports: dict[str, tuple] = field(default_factory=dict)  # name -> ("mod", m) | ("sym", m, attr)


def _import_bindings(stmt: ast.Import | ast.ImportFrom, module: Module) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            if a.asname:
                out[a.asname] = ("mod", a.name)
            else:  # `import a.b.c` binds `a`
                out[a.name.split(".")[0]] = ("mod", a.name.split(".")[0])
        return out
    base = stmt.module or ""
    if stmt.level:
        parts = module.name.split(".")
        pkg = parts if module.is_pkg else parts[:-1]
        pkg = pkg[: len(pkg) - (stmt.level - 1)] if stmt.level > 1 else pkg
        base = ".".join(pkg + ([base] if base else []))
    for a in stmt.names:
        if a.name != "*":
            out[a.asname or a.name] = ("sym", base, a.name)
    return out


def _module_level_imports(tree: ast.Module, module: Module) -> dict[str, tuple]:
    out: dict[str, tuple] = {}

    def scan(body: list[ast.stmt]) -> None:
        for s in body:
            if isinstance(s, ast.Import | ast.ImportFrom):
                out.update(_import_bindings(s, module))
            elif isinstance(s, ast.If | ast.Try):  # `if TYPE_CHECKING:`, try/except ImportError
                scan(s.body)
                scan(getattr(s, "orelse", []))
                for h in getattr(s, "handlers", []):
                    scan(h.body)

    scan(tree.body)
    return out


class Index:
    def __init__(self, src_root: Path, package: str):
        self.modules: dict[str, Module] = {}
        for path in sorted((src_root / package).rglob("*.py")):
            rel = path.relative_to(src_root).with_suffix("")
            is_pkg = rel.name == "__init__"
            name = ".".join(rel.parts[:-1] if is_pkg else rel.parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            mod = Module(name, is_pkg, tree)
            mod.imports = _module_level_imports(tree, mod)
            for s in tree.body:
                if isinstance(s, FuncNode):
                    mod.defs[s.name] = Func(name, s.name, s)
                elif isinstance(s, ast.ClassDef):
                    mod.defs[s.name] = self._cls(name, s)
            self.modules[name] = mod

    @staticmethod
    def _cls(module: str, node: ast.ClassDef) -> Cls:
        c = Cls(module, node.name, node)
        for s in node.body:
            if isinstance(s, FuncNode):
                c.methods[s.name] = Func(module, f"{node.name}.{s.name}", s, cls=c)
        return c

    # -- name lookup
    def module_attr(self, modname: str, attr: str, _seen: frozenset = frozenset()):
        """What ``attr`` is in module ``modname``: a Func, a Cls, ("mod", name), or None."""
        if (modname, attr) in _seen:
            return None
        mod = self.modules.get(modname)
        if mod is None:
            return None
        if attr in mod.defs:
            return mod.defs[attr]
        if attr in mod.imports:
            return self.binding(mod.imports[attr], _seen | {(modname, attr)})
        if f"{modname}.{attr}" in self.modules:
            return ("mod", f"{modname}.{attr}")
        return None

    def binding(self, b: tuple, _seen: frozenset = frozenset()):
        if b[0] == "mod":
            return b if b[1] in self.modules else None
        _, base, attr = b
        if f"{base}.{attr}" in self.modules:
            return ("mod", f"{base}.{attr}")
        return self.module_attr(base, attr, _seen)

    def method(self, cls: Cls, name: str, _seen: frozenset = frozenset()) -> Func | None:
        """``cls.name`` through base classes defined in the package (depth first)."""
        if name in cls.methods:
            return cls.methods[name]
        for base in cls.node.bases:
            b = self.resolve_in_module(base, cls.module)
            if isinstance(b, Cls) and b.qualname not in _seen:
                m = self.method(b, name, _seen | {cls.qualname})
                if m is not None:
                    return m
        return None

    def resolve_in_module(self, expr: ast.expr, modname: str):
        mod = self.modules[modname]
        if isinstance(expr, ast.Name):
            if expr.id in mod.defs:
                return mod.defs[expr.id]
            if expr.id in mod.imports:
                return self.binding(mod.imports[expr.id])
            return None
        if isinstance(expr, ast.Attribute):
            v = self.resolve_in_module(expr.value, modname)
            if isinstance(v, tuple) and v[0] == "mod":
                return self.module_attr(v[1], expr.attr)
            if isinstance(v, Cls):
                return self.method(v, expr.attr)
        return None


# ----------------------------------------------------------------------------------------- the walk
def _params(fn: FuncNode | ast.Lambda) -> list[str]:
    a = fn.args
    return [p.arg for p in (*a.posonlyargs, *a.args)]


def _all_params(fn: FuncNode | ast.Lambda) -> set[str]:
    a = fn.args
    names = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
    names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
    return names


def _attr_root(expr: ast.expr) -> tuple[ast.expr, list[str]]:
    """``a.b.c`` -> (Name a, ["b", "c"])."""
    chain: list[str] = []
    while isinstance(expr, ast.Attribute):
        chain.insert(0, expr.attr)
        expr = expr.value
    return expr, chain


@dataclass
class Scope:
    """What a followed function's body sees while it is read."""

    func: Func
    tracked: set[str]  # local names holding the value
    self_attrs: set[str]  # attributes of self holding the value
    local_imports: dict[str, tuple]
    local_defs: dict[str, Func]  # nested functions visible here (own and enclosing)


class Walker:
    def __init__(self, index: Index, *, attrs: bool, typed: bool):
        self.index, self.attrs, self.typed = index, attrs, typed
        self.explored: set[tuple[str, str, str]] = set()
        self.class_explored: set[tuple[str, str, str]] = set()
        self.modules: list[str] = []
        self.functions: list[str] = []
        self.transitions: list[dict] = []
        self.path: list[str] = []  # module of each function on the DFS call path
        self.current: str | None = None  # the module the reader has open
        self.unresolved: list[str] = []  # calls handed the value whose callee is not followed

    def _move(self, to: str, what: str) -> None:
        self.transitions.append(
            {
                "from": self.current,
                "to": to,
                "function": what,
                "revisit": to in self.modules,
                "climb": to in self.path,
            }
        )
        self.current = to

    # -- entry points
    def start(self, func: Func, param: str) -> None:
        self._enter(func, param=param, self_attr=None, caller=None)

    def _enter(self, func: Func, *, param: str | None, self_attr: str | None, caller: str | None) -> None:
        mod = func.module
        if caller is not None:
            if self.current != caller:  # the reader goes back up to the caller's module first
                self._move(caller, f"(back to read on in {caller})")
            if caller != mod:
                self._move(mod, func.qualname)
        elif self.current is None:
            self.current = mod
        key = (mod, func.qualname, f"{param}|{self_attr}")
        if key in self.explored:
            return
        self.explored.add(key)
        if mod not in self.modules:
            self.modules.append(mod)
        self.functions.append(f"{mod}:{func.qualname}({param or 'self.' + str(self_attr)})")
        self.path.append(mod)
        try:
            scope = Scope(
                func,
                tracked={param} if param else set(),
                self_attrs={self_attr} if self_attr else set(),
                local_imports={},
                local_defs=self._enclosing_defs(func),
            )
            self._read(func.node, scope)
            if func.qualname.endswith(".__init__") and func.cls is not None and param:
                for attr in self._stored_attrs(func.node, param):
                    self._follow_class(func.cls, attr, caller=mod)
        finally:
            self.path.pop()

    def _follow_class(self, cls: Cls, attr: str, *, caller: str) -> None:
        """After ``C(value)``: every method of ``C`` (and its package bases) that reads ``self.<attr>``."""
        key = (cls.module, cls.qualname, attr)
        if key in self.class_explored:
            return
        self.class_explored.add(key)
        for name in self._method_names(cls):
            m = self.index.method(cls, name)
            if m is None or name == "__init__":
                continue
            if any(
                isinstance(n, ast.Attribute)
                and n.attr == attr
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
                for n in ast.walk(m.node)
            ):
                self._enter(m, param=None, self_attr=attr, caller=caller)

    def _method_names(self, cls: Cls, _seen: frozenset = frozenset()) -> list[str]:
        names = list(cls.methods)
        for base in cls.node.bases:
            b = self.index.resolve_in_module(base, cls.module)
            if isinstance(b, Cls) and b.qualname not in _seen:
                names += [n for n in self._method_names(b, _seen | {cls.qualname}) if n not in names]
        return names

    @staticmethod
    def _stored_attrs(init: FuncNode, param: str) -> list[str]:
        """Attributes of self assigned the parameter in ``__init__`` (``self.cfg = cfg``; tuple form too)."""
        out: list[str] = []
        for n in ast.walk(init):
            if not isinstance(n, ast.Assign):
                continue
            for t in n.targets:
                for tt, vv in _pairs(t, n.value):
                    if (
                        isinstance(tt, ast.Attribute)
                        and isinstance(tt.value, ast.Name)
                        and tt.value.id == "self"
                        and isinstance(vv, ast.Name)
                        and vv.id == param
                        and tt.attr not in out
                    ):
                        out.append(tt.attr)
        return out

    def _enclosing_defs(self, func: Func) -> dict[str, Func]:
        out: dict[str, Func] = {}
        chain = []
        f: Func | None = func
        while f is not None:
            chain.insert(0, f)
            f = f.parent
        for f in chain:
            if isinstance(f.node, ast.Lambda):
                continue
            for s in ast.walk(f.node):
                if isinstance(s, FuncNode) and s is not f.node and s.name not in out:
                    out[s.name] = Func(f.module, f"{f.qualname}.<locals>.{s.name}", s, cls=f.cls, parent=f)
        return out

    # -- reading a body
    def _read(self, node: ast.AST, scope: Scope) -> None:
        # imports anywhere in the function body count (function-local imports)
        for n in ast.walk(node):
            if isinstance(n, ast.Import | ast.ImportFrom):
                scope.local_imports.update(_import_bindings(n, self.index.modules[scope.func.module]))
        self._visit(node, scope, top=True)

    def _visit(self, node: ast.AST, scope: Scope, top: bool = False) -> None:
        if not top and isinstance(node, FuncNode | ast.Lambda):
            shadow = _all_params(node)
            if scope.tracked & shadow:
                inner = Scope(
                    scope.func, scope.tracked - shadow, scope.self_attrs, scope.local_imports, scope.local_defs
                )
                for d in getattr(node, "decorator_list", []):
                    self._visit(d, scope)
                for child in node.body if isinstance(node.body, list) else [node.body]:
                    self._visit(child, inner)
                return
        if isinstance(node, ast.Assign):
            for t in node.targets:
                for tt, vv in _pairs(t, node.value):
                    if isinstance(tt, ast.Name) and self._carries(vv, scope) == "value":
                        scope.tracked.add(tt.id)
        if isinstance(node, ast.Call):
            self._call(node, scope)
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    def _carries(self, expr: ast.expr, scope: Scope) -> str | None:
        """ "value" (the tracked value itself), "attr" (an attribute chain of it) or None."""
        root, chain = _attr_root(expr)
        if not isinstance(root, ast.Name):
            return None
        if root.id in scope.tracked:
            return "attr" if chain else "value"
        if root.id == "self" and chain and chain[0] in scope.self_attrs:
            return "attr" if len(chain) > 1 else "value"
        return None

    def _call(self, call: ast.Call, scope: Scope) -> None:
        passed: list[tuple[int | str, str]] = []  # (position or keyword, how)
        for i, a in enumerate(call.args):
            if isinstance(a, ast.Starred):
                break
            how = self._carries(a, scope)
            if how == "value" or (how == "attr" and self.attrs):
                passed.append((i, how))
        for kw in call.keywords:
            if kw.arg is None:
                continue
            how = self._carries(kw.value, scope)
            if how == "value" or (how == "attr" and self.attrs):
                passed.append((kw.arg, how))
        if not passed:
            return
        target, bound = self._resolve_callee(call.func, scope)
        if target is None:
            self.unresolved.append(f"{scope.func.module}:{call.lineno} {ast.unparse(call.func)}")
            return
        caller = scope.func.module
        if isinstance(target, Cls):
            init = self.index.method(target, "__init__")
            if init is not None:
                for where, _ in passed:
                    p = self._param_for(init, where, skip_first=True)
                    if p:
                        self._enter(init, param=p, self_attr=None, caller=caller)
            else:  # dataclass-style: positional/keyword arguments onto annotated fields
                fields = [
                    s.target.id
                    for s in target.node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                ]
                for where, _ in passed:
                    f = fields[where] if isinstance(where, int) and where < len(fields) else where
                    if isinstance(f, str) and f in fields:
                        self._follow_class(target, f, caller=caller)
            return
        for where, _ in passed:
            p = self._param_for(target, where, skip_first=bound)
            if p:
                self._enter(target, param=p, self_attr=None, caller=caller)

    @staticmethod
    def _param_for(func: Func, where: int | str, *, skip_first: bool) -> str | None:
        params = _params(func.node)
        if skip_first and params:
            params = params[1:]
        if isinstance(where, int):
            return params[where] if where < len(params) else None
        return where if where in _all_params(func.node) else None

    def _resolve_callee(self, expr: ast.expr, scope: Scope) -> tuple[Func | Cls | None, bool]:
        """The callee's definition and whether its first parameter is bound (a method call)."""
        idx = self.index
        modname = scope.func.module
        if isinstance(expr, ast.Name):
            if expr.id in scope.local_defs:
                return scope.local_defs[expr.id], False
            if expr.id in scope.local_imports:
                return _func_or_cls(idx.binding(scope.local_imports[expr.id])), False
            return _func_or_cls(idx.resolve_in_module(expr, modname)), False
        if not isinstance(expr, ast.Attribute):
            return None, False
        v = expr.value
        if isinstance(v, ast.Name) and v.id in ("self", "cls") and scope.func.cls is not None:
            m = idx.method(scope.func.cls, expr.attr)
            if m is None:
                return None, False
            static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in m.node.decorator_list)
            return m, not static
        if isinstance(v, ast.Name) and v.id in scope.local_imports:
            b = idx.binding(scope.local_imports[v.id])
            owner = b
        elif isinstance(v, ast.Name) and self.typed and (cls := self._annotated_class(v.id, scope)) is not None:
            return idx.method(cls, expr.attr), True
        else:
            owner = self._resolve_value(v, scope)
        if isinstance(owner, tuple) and owner[0] == "mod":
            return _func_or_cls(idx.module_attr(owner[1], expr.attr)), False
        if isinstance(owner, Cls):
            m = idx.method(owner, expr.attr)
            if m is None:
                return None, False
            is_cm = any(isinstance(d, ast.Name) and d.id == "classmethod" for d in m.node.decorator_list)
            return m, is_cm
        return None, False

    def _resolve_value(self, expr: ast.expr, scope: Scope):
        idx = self.index
        if isinstance(expr, ast.Name):
            if expr.id in scope.local_defs or expr.id in scope.tracked:
                return None
            if expr.id in scope.local_imports:
                return idx.binding(scope.local_imports[expr.id])
            return idx.resolve_in_module(expr, scope.func.module)
        if isinstance(expr, ast.Attribute):
            v = self._resolve_value(expr.value, scope)
            if isinstance(v, tuple) and v[0] == "mod":
                return idx.module_attr(v[1], expr.attr)
        return None

    def _annotated_class(self, name: str, scope: Scope) -> Cls | None:
        node = scope.func.node
        if isinstance(node, ast.Lambda):
            return None
        a = node.args
        for p in (*a.posonlyargs, *a.args, *a.kwonlyargs):
            if p.arg == name and p.annotation is not None:
                ann = p.annotation
                if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
                    try:
                        ann = ast.parse(ann.value, mode="eval").body
                    except SyntaxError:
                        return None
                r = self._resolve_value(ann, Scope(scope.func, set(), set(), scope.local_imports, {}))
                return r if isinstance(r, Cls) else None
        return None

    # -- results
    def report(self) -> dict:
        return {
            "modules": list(self.modules),
            "module_count": len(self.modules),
            "transitions": [f"{t['from']} -> {t['to']}" for t in self.transitions],
            "transition_count": len(self.transitions),
            "revisits": sum(t["revisit"] for t in self.transitions),
            "climbs": sum(t["climb"] for t in self.transitions),
            "functions": list(self.functions),
            "not_followed": list(self.unresolved),
        }


def _pairs(target: ast.expr, value: ast.expr):
    """(target, value) pairs of an assignment, unpacking ``a, b = x, y``."""
    if isinstance(target, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List):
        if len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                yield from _pairs(t, v)
        return
    yield target, value


def _func_or_cls(x):
    return x if isinstance(x, Func | Cls) else None


# ----------------------------------------------------------------------------------------- driver
def find_function(index: Index, spec: str) -> Func:
    modname, _, qual = spec.partition(":")
    if modname not in index.modules:
        raise SystemExit(f"no module {modname!r}")
    parts = qual.split(".")
    obj = index.modules[modname].defs.get(parts[0])
    for p in parts[1:]:
        obj = index.method(obj, p) if isinstance(obj, Cls) else None
    if not isinstance(obj, Func):
        raise SystemExit(f"no function {qual!r} in {modname}")
    return obj


def walk(src_root: Path, spec: str, param: str, *, attrs: bool = False, typed: bool = False) -> dict:
    package = spec.split(":")[0].split(".")[0]
    index = Index(src_root, package)
    func = find_function(index, spec)
    if param not in _all_params(func.node):
        raise SystemExit(f"{spec} has no parameter {param!r}")
    w = Walker(index, attrs=attrs, typed=typed)
    w.start(func, param)
    return w.report()


def analyse(spec: str, param: str, *, ref: str | None = None, src_root: Path = ROOT, typed: bool = False) -> dict:
    """Both walks (value only, value and attribute chains) on the working tree or on ``ref``."""
    package = spec.split(":")[0].split(".")[0]
    if ref is None:
        return _both(src_root, spec, param, typed)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(src_root), "archive", ref, package], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        return _both(Path(tmp), spec, param, typed)


def _both(src_root: Path, spec: str, param: str, typed: bool) -> dict:
    return {
        "start": spec,
        "param": param,
        "typed_receivers": typed,
        "value": walk(src_root, spec, param, attrs=False, typed=typed),
        "value_and_attrs": walk(src_root, spec, param, attrs=True, typed=typed),
    }


def _print(result: dict, ref: str | None, attrs: bool) -> None:
    where = ref or "working tree"
    for label, key in (("value only", "value"), ("value + attribute chains", "value_and_attrs")):
        r = result[key]
        print(
            f"{result['start']} {result['param']!r} @ {where} [{label}]: {r['module_count']} modules, "
            f"{r['transition_count']} transitions, {r['revisits']} revisits, {r['climbs']} climbs back up"
        )
    r = result["value_and_attrs" if attrs else "value"]
    print(f"\nmodules ({'value + attribute chains' if attrs else 'value only'}), in order of first visit:")
    for m in r["modules"]:
        print(f"  {m}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("start", help="module:function, e.g. mlops_ray.pipeline.run:run_pipeline")
    ap.add_argument("param", help="the parameter to follow, e.g. cfg")
    ap.add_argument("--ref", help="analyse this git ref's tree instead of the working tree")
    ap.add_argument("--attrs", action="store_true", help="list the modules of the attribute-chain walk")
    ap.add_argument("--typed", action="store_true", help="resolve p.m(...) on parameters annotated with a class")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--root", type=Path, default=ROOT, help="directory holding the package (default: repo root)")
    args = ap.parse_args(argv)
    result = analyse(args.start, args.param, ref=args.ref, src_root=args.root, typed=args.typed)
    result["ref"] = args.ref
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        _print(result, args.ref, args.attrs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
