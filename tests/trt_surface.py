"""Check Python code against a TensorRT API surface file, without TensorRT (DESIGN.md §8).

``load_api`` parses ``reference/tensorrt-*-python-api.txt``: ``class X`` lines, then indented members — ``name
(property)``, bare names (enum values, nested classes), ``name(self: trt.X, a: T, b: T = d) -> R`` signatures,
and ``name(*args, **kwargs)`` followed by numbered overloads; un-indented module-level names at the end.

``find_uses`` reads source code and finds every use of TensorRT: attribute chains on the module name ``trt``
(``trt.BuilderFlag.TF32``) and member accesses and calls on objects whose TensorRT type it can infer: parameters and
attributes annotated ``trt.X``, results of ``trt.X(...)`` constructors, and results of methods whose signature in the
API file returns ``trt.Y`` (followed through assignments to names and ``self.`` attributes). ``check`` reports each
use whose class or member does not exist, or whose call matches none of the member's signatures (positional count,
required parameters, keyword names).
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

# Module attributes defined in the Python wrapper (tensorrt/__init__.py) rather than the compiled bindings the API
# files were dumped from. ``__version__`` is every package's version attribute (deploy.md §1.1 reads it).
PYTHON_LEVEL = {"__version__"}
# Return types spelled with C++ names in the dumps, mapped to the Python class they are.
TYPE_ALIASES = {"nvonnxparser::IParserError": "ParserError"}


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    has_default: bool
    kind: str = "plain"  # or "*args" / "**kwargs"


@dataclasses.dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]
    returns: str | None  # a TensorRT class name, or None

    def accepts(self, n_positional: int, keywords: tuple[str, ...]) -> bool:
        if any(p.kind != "plain" for p in self.params):
            return True
        names = [p.name for p in self.params]
        if n_positional > len(names) or any(k not in names[n_positional:] for k in keywords):
            return False
        bound = set(names[:n_positional]) | set(keywords)
        return all(p.has_default or p.name in bound for p in self.params)


@dataclasses.dataclass
class Member:
    kind: str  # "method", "property" or "value"
    signatures: list[Signature] = dataclasses.field(default_factory=list)


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([<":
            depth += 1
        elif ch in ")]>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + ([current.strip()] if current.strip() else [])


def _returns(text: str) -> str | None:
    text = text.strip()
    if text in TYPE_ALIASES:
        return TYPE_ALIASES[text]
    match = re.fullmatch(r"trt\.(\w+)", text)
    return match.group(1) if match else None


def parse_signature(line: str) -> Signature:
    """``name(self: trt.X, a: T, b: T = d) -> R`` → Signature (``self`` dropped)."""
    name_end = line.index("(")
    depth, close = 0, None
    for i in range(name_end, len(line)):
        depth += {"(": 1, ")": -1}.get(line[i], 0)
        if depth == 0:
            close = i
            break
    params = []
    for raw in _split_params(line[name_end + 1: close]):
        if raw.startswith("**"):
            params.append(Param(raw[2:], True, "**kwargs"))
        elif raw.startswith("*"):
            params.append(Param(raw[1:], True, "*args"))
        else:
            name = raw.split(":")[0].split("=")[0].strip()
            if name != "self":
                params.append(Param(name, "=" in raw))
    rest = line[close + 1:].strip()
    return Signature(tuple(params), _returns(rest[2:]) if rest.startswith("->") else None)


def load_api(path: str | Path) -> dict[str, dict[str, Member]]:
    """Class name → member name → Member; module-level names live under the class name ``""``."""
    api: dict[str, dict[str, Member]] = {"": {}}
    current = None
    for line in Path(path).read_text().splitlines():
        if line.startswith("class "):
            current = api.setdefault(line[6:].strip(), {})
        elif line.startswith("  ") and current is not None:
            text = line.strip()
            overload = re.match(r"\d+\. (\w+)\(", text)
            if overload:
                current[overload.group(1)].signatures.append(parse_signature(text[text.index(" ") + 1:]))
            elif text.endswith("(property)"):
                current[text.split()[0]] = Member("property")
            elif "(" in text:
                name = text[: text.index("(")]
                sig = parse_signature(text)
                overloaded = [p.kind for p in sig.params] == ["*args", "**kwargs"]
                current[name] = Member("method", [] if overloaded else [sig])
            else:
                current[text] = Member("value")
        elif line.strip():
            name, _, sig = line.partition("  :: ")
            api[""][name.strip()] = Member("method", [parse_signature(sig)]) if sig else Member("value")
            current = None
    return api


@dataclasses.dataclass(frozen=True)
class Use:
    """One use of the TensorRT API: ``Class.member`` (module level: ``.name``), how, and where."""

    owner: str
    member: str
    how: str  # "attr", "call", "store", or "override" (a method of a subclass of a TensorRT class)
    line: int
    n_positional: int = 0
    keywords: tuple[str, ...] = ()

    @property
    def qualname(self) -> str:
        return f"{self.owner}.{self.member}"


def _trt_class(annotation: ast.expr | None) -> str | None:
    if annotation is None:
        return None
    match = re.search(r"\btrt\.(\w+)", ast.unparse(annotation))
    return match.group(1) if match else None


def _key(node: ast.expr) -> str | None:
    """Environment key of a name or a ``self.`` attribute."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


class _Checker:
    def __init__(self, api: dict[str, dict[str, Member]]) -> None:
        self.api = api
        self.untyped: set[str] = set()  # names and self. attributes used with ``.`` whose type is unknown

    def type_of(self, node: ast.expr, env: dict[str, str]) -> str | None:
        key = _key(node)
        if key is not None:
            return env.get(key)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if isinstance(func.value, ast.Name) and func.value.id == "trt" and func.attr in self.api:
                return func.attr  # a constructor
            owner = self.type_of(func.value, env)
            member = self.api.get(owner or "", {}).get(func.attr)
            if member is not None:
                n, kws = len(node.args), tuple(k.arg for k in node.keywords if k.arg)
                for sig in member.signatures:
                    if sig.accepts(n, kws):
                        return sig.returns
        return None

    def environment(self, scope: ast.AST, env: dict[str, str]) -> dict[str, str]:
        """Types of names and ``self.`` attributes assigned or annotated in ``scope`` (iterated to a fixpoint)."""
        env = dict(env)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in scope.args.args + scope.args.kwonlyargs:
                if _trt_class(arg.annotation):
                    env[arg.arg] = _trt_class(arg.annotation)
        while True:
            before = dict(env)
            for node in ast.walk(scope):
                if isinstance(node, ast.AnnAssign) and _key(node.target) and _trt_class(node.annotation):
                    env[_key(node.target)] = _trt_class(node.annotation)
                elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                    pairs = list(zip(target.elts, value.elts)) if isinstance(target, ast.Tuple) and isinstance(
                        value, ast.Tuple) and len(target.elts) == len(value.elts) else [(target, value)]
                    for t, v in pairs:
                        found = self.type_of(v, env)
                        if _key(t) and found:
                            env[_key(t)] = found
            if env == before:
                return env

    def uses(self, scope: ast.AST, env: dict[str, str]) -> list[Use]:
        found, callees, stores = [], set(), set()
        for node in ast.walk(scope):
            if isinstance(node, ast.Call):
                callees.add(id(node.func))
            elif isinstance(node, ast.Assign):
                stores.update(id(t) for t in node.targets)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute):
                continue
            how = "call" if id(node) in callees else "store" if id(node) in stores else "attr"
            if isinstance(node.value, ast.Name) and node.value.id == "trt":
                found.append(Use("", node.attr, "attr", node.lineno))
                continue
            if isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id == "trt":
                found.append(Use(node.value.attr, node.attr, "attr", node.lineno))
                continue
            owner = self.type_of(node.value, env)
            if owner is None:
                if _key(node.value):
                    self.untyped.add(_key(node.value))
                continue
            call = next((c for c in ast.walk(scope) if isinstance(c, ast.Call) and c.func is node), None)
            n = len(call.args) if call else 0
            kws = tuple(k.arg for k in call.keywords if k.arg) if call else ()
            found.append(Use(owner, node.attr, how, node.lineno, n, kws))
        return found


def find_uses(source: str, api: dict[str, dict[str, Member]], untyped: set[str] | None = None) -> list[Use]:
    """Every TensorRT use in ``source`` (a module), typed with the classes of ``api``. ``untyped`` collects the
    receivers (names, ``self.`` attributes) of attribute accesses whose type could not be inferred."""
    checker, tree, found = _Checker(api), ast.parse(source), set()
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    class_env = {id(c): {k: v for k, v in checker.environment(c, {}).items() if k.startswith("self.")}
                 for c in classes}
    owner_of = {id(f): class_env[id(c)] for c in classes for f in ast.walk(c)
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            env = checker.environment(func, owner_of.get(id(func), {}))
            found.update(checker.uses(func, env))
    found.update(checker.uses(ast.Module(body=[n for n in tree.body if not isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))], type_ignores=[]), {}))
    for cls in classes:
        for base in filter(None, map(_trt_class, cls.bases)):
            found.add(Use(base, "", "attr", cls.lineno))  # the base class itself must exist
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("__"):
                    params = tuple(a.arg for a in fn.args.args[1:])
                    found.add(Use(base, fn.name, "override", fn.lineno, len(params), params))
    if untyped is not None:
        untyped.update(checker.untyped)
    return sorted(found, key=lambda u: (u.line, u.qualname))


def check(uses: list[Use], api: dict[str, dict[str, Member]]) -> list[str]:
    """Problems: missing classes or members, calls no signature accepts, stores to non-properties."""
    problems = []
    for use in uses:
        if use.owner == "" and use.member in PYTHON_LEVEL:
            continue
        if use.owner not in api:
            problems.append(f"line {use.line}: class trt.{use.owner} does not exist")
            continue
        if use.owner == "" and use.member not in api[""] and use.member in api:
            continue  # trt.SomeClass
        if use.member == "" or (use.member.startswith("__") and use.member.endswith("__")):
            continue  # the class exists; dunder methods (``__init__`` of a subclass) are not in the dumps
        member = api[use.owner].get(use.member)
        where = f"line {use.line}: trt.{use.qualname.lstrip('.')}"
        if member is None:
            problems.append(f"{where} does not exist")
        elif use.how == "call" and member.kind != "value" and member.signatures and not any(
                s.accepts(use.n_positional, use.keywords) for s in member.signatures):
            problems.append(f"{where} called with {use.n_positional} positional and keywords {list(use.keywords)}, "
                            f"which no signature accepts")
        elif use.how == "call" and member.kind == "property":
            problems.append(f"{where} is a property, not a method")
        elif use.how == "override" and not any([p.name for p in s.params] == list(use.keywords)
                                               for s in member.signatures):
            problems.append(f"{where} is overridden with parameters {list(use.keywords)}, unlike TensorRT's")
        elif use.how == "store" and member.kind != "property":
            problems.append(f"{where} is assigned but is not a property")
    return problems
