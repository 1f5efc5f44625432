"""Judging model programs by parsing them, never by matching text: the operators a TorchScript program
calls (read with Python's tokenizer, so `torch . save (` and a line break before `(` are the same call),
and the operators and symbolic expressions of a `torch.export` graph (read from its JSON). Both the scan
and mlwarden's `.pt2` loader use these functions, so what the scan approves is what the loader accepts.

Unsafe ML artifacts: MITRE ATLAS AML.T0011.000. A TorchScript program or an exported graph runs when the
model predicts, and a `.pt2` graph's symbolic shapes are parsed by sympy's `sympify` (an `eval`) on load.
"""
from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator

# (name, kind, where) triples; kind: operator | file-operator
Refs = list[tuple[str, str, str]]

# TorchScript code may call operators of these namespaces; others need a library loaded into the process.
TORCHSCRIPT_NAMESPACES = {"aten", "prim", "quantized", "_quantized", "prepacked", "sparse", "profiler"}
# Operators of the accepted namespaces that reach the file system: `from_file` memory-maps (and creates) any
# path read-write, `save` writes one. No model needs them to predict.
FILE_OPS = {"from_file", "save", "load", "load_tensor", "_load", "_save", "_save_for_lite_interpreter"}

# ATen operators that skip their own checks (unsafe views and indexing, sparse constructors that take
# indices on trust, storage swaps): a graph can use them to read or write outside a tensor's memory. No
# classifier needs them; they are refused like the file operators, in TorchScript as tensor methods too.
UNCHECKED_OPS = re.compile(r".*unsafe.*|_?sparse.*|.*_sparse_.*|_coalesced_?|_indices|_values|set_|"
                           r"_index_put_impl_?|_nested_.*|_to_sparse.*|to_sparse.*|_copy_from.*|"
                           r"_efficientzerotensor|_fw_primal.*|_resize_output_?")


def unchecked(op: str) -> bool:
    return bool(UNCHECKED_OPS.fullmatch(op))


# torch.export graphs: ATen and prims operators (op.overload), the higher-order operators that only run
# subgraphs of the same graph, and the Python functions the exporter emits for symbolic shapes.
_EXPORT_OP = re.compile(r"torch\.ops\.(aten|prims)\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*)")
HIGHER_ORDER = {"cond", "while_loop", "map_impl", "scan", "associative_scan", "wrap_with_set_grad_enabled",
                "wrap_with_autocast", "auto_functionalized", "auto_functionalized_v2", "invoke_subgraph",
                "flex_attention", "out_dtype", "hints_wrapper"}
_SYM_FN = re.compile(r"torch\._?sym_[a-z_]+")
EXPORT_PY_OPS = {f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                             "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_",
                                             "or_", "xor", "not_", "invert", "lshift", "rshift")} | \
    {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt", "exp", "log", "log2", "pow", "isnan", "isinf")}

# What a symbolic-shape expression may contain: sympy's and torch's shape functions by name (the ones
# torch's deserializer passes to sympify, less the powers, whose nesting can take forever), symbols, small
# integer literals and arithmetic. No attribute access, subscripts, strings other than a symbol's name,
# or any other name: `sympify` evaluates the string as Python.
SYMPY_NAMES = {"Symbol", "Integer", "Rational", "Float", "True", "False", "oo", "zoo", "nan", "Max", "Min", "Abs",
               "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Mul", "Add", "FloorDiv", "ModularIndexing",
               "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift",
               "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
               "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "positive", "negative", "integer", "real",
               "nonnegative", "nonpositive", "finite", "zero", "nonzero", "rational", "commutative"}
_SYMBOL = re.compile(r"[a-z]+[0-9]{1,6}")      # s0, s77, u3, zuf0: the names torch gives symbols (torch's
# deserializer counts up to an unbacked symbol's number, so u99999999999999 would loop for ever)
_EXPR_OPS = {"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "<", ">", "<=", ">=", "==", "!=", "&", "|",
             "~"}
MAX_EXPR = 4096


def _tokens(code: str) -> Iterator[tokenize.TokenInfo]:
    """Significant tokens: no comments, line breaks inside brackets or indentation."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
            tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type not in skip:
            yield tok


def dotted_chains(code: str) -> Iterator[list[str]]:
    """Every `a.b.c` chain in Python-syntax code as its parts, however it is spaced or broken across lines.
    Raises tokenize.TokenError or SyntaxError (IndentationError) on code that does not tokenize."""
    chain: list[str] = []
    want_name = True
    for tok in _tokens(code):
        if tok.type == tokenize.NAME and want_name:
            chain.append(tok.string)
            want_name = False
        elif tok.type == tokenize.OP and tok.string == "." and chain and not want_name:
            want_name = True
        else:
            if chain:
                yield chain
            chain, want_name = ([tok.string], False) if tok.type == tokenize.NAME else ([], True)
    if chain:
        yield chain


def _attributes(code: str) -> set[str]:
    """Every name that follows a `.`, whatever stands before it (a call's result, a subscript)."""
    names, after_dot = set(), False
    for tok in _tokens(code):
        if after_dot and tok.type == tokenize.NAME:
            names.add(tok.string)
        after_dot = tok.type == tokenize.OP and tok.string == "."
    return names


def torchscript_refs(code: str, where: str) -> tuple[Refs, list[str]]:
    """Operators a TorchScript program refers to: `ops.NS.OP`, `torch.ops.NS.OP`, `torch.OP` (ATen) and
    custom classes `torch.classes.NS.C`. A file operator anywhere in the chain is a file operator."""
    refs: Refs = []
    try:
        chains = list(dotted_chains(code))
    except (tokenize.TokenError, SyntaxError) as e:
        return [], [f"{where}: TorchScript code that does not parse ({type(e).__name__})"]
    for name in sorted({a for a in _attributes(code) if unchecked(a)}):   # a tensor method: x._coalesced_(True)
        refs.append((f"Tensor.{name}", "operator", where))
    for parts in chains:
        if parts[0] not in ("torch", "ops") or len(parts) < 2:
            continue
        name = ".".join(parts)
        if any(p in FILE_OPS for p in parts[1:]):
            refs.append((name, "file-operator", where))
            continue
        if any(unchecked(p) for p in parts[1:]):
            refs.append((name, "operator", where))
            continue
        tail = parts[2:] if parts[:2] == ["torch", "ops"] else parts[1:] if parts[0] == "ops" else None
        if parts[:2] == ["torch", "classes"]:
            refs.append((name, "operator", where))
        elif tail is not None and tail and tail[0] not in TORCHSCRIPT_NAMESPACES:
            refs.append((name, "operator", where))
        elif any(p.startswith("__") for p in parts[1:]):
            refs.append((name, "operator", where))
    return refs, []


def export_target_ok(target: str) -> bool:
    """An operator a `.pt2` graph may call: ATen and prims operators other than file operators, the listed
    higher-order operators, torch's symbolic-shape functions and the exporter's Python operators."""
    m = _EXPORT_OP.fullmatch(target)
    if m:
        return m.group(2) not in FILE_OPS and m.group(2).lstrip("_") not in FILE_OPS and not unchecked(m.group(2))
    if target.startswith("torch.ops.higher_order."):
        return target[len("torch.ops.higher_order."):] in HIGHER_ORDER
    return bool(_SYM_FN.fullmatch(target)) or target in EXPORT_PY_OPS


def expression_problem(expr: str) -> str | None:
    """Why `expr` is no plain symbolic-shape expression (None when it is one), read with the tokenizer."""
    if len(expr) > MAX_EXPR:
        return f"a symbolic expression of {len(expr)} characters"
    try:
        toks = list(_tokens(expr))
    except (tokenize.TokenError, SyntaxError):
        return "a symbolic expression that does not parse"
    for i, tok in enumerate(toks):
        s = tok.string
        if tok.type == tokenize.NAME:
            if s not in SYMPY_NAMES and not _SYMBOL.fullmatch(s):
                return f"a symbolic expression that names {s[:40]!r}"
        elif tok.type == tokenize.NUMBER:
            if not s.isdigit() or len(s) > 12:
                return f"a symbolic expression with the literal {s[:20]!r}"
        elif tok.type == tokenize.STRING:
            if not re.fullmatch(r"'[a-z]+[0-9]{1,6}'|\"[a-z]+[0-9]{1,6}\"", s):
                return f"a symbolic expression with the string {s[:40]!r}"
        elif tok.type == tokenize.OP and s in _EXPR_OPS:
            if s == "**":   # a symbol to a small literal power only (parentheses would build a tower)
                prev = toks[i - 1] if i else None
                nxt = toks[i + 1].string if i + 1 < len(toks) else ""
                after = toks[i + 2].string if i + 2 < len(toks) else ""
                if not (prev is not None and prev.type == tokenize.NAME and _SYMBOL.fullmatch(prev.string)
                        and nxt.isdigit() and int(nxt) <= 64 and after != "**"):
                    return "a symbolic expression with a power other than a symbol to a small literal"
        else:
            return f"a symbolic expression with {s[:20]!r}"
    return None


def export_graph_refs(graph: object, where: str, max_depth: int = 200) -> tuple[Refs, list[str]]:
    """Operators outside the accepted set (as refs) and unsafe symbolic expressions (as problems) of a
    parsed `.pt2` model JSON. Every `target` string and every `expr_str` anywhere in the document counts."""
    targets: set[str] = set()
    problems: list[str] = []
    stack = [(graph, 0)]
    while stack:
        o, depth = stack.pop()
        if depth > max_depth:
            return [], [f"{where}: graph nested more than {max_depth} levels"]
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "range_constraints" and isinstance(v, dict):
                    bad = [str(n)[:30] for n in v if not (isinstance(n, str) and _SYMBOL.fullmatch(n))]
                    if bad and len(problems) < 8:
                        problems.append(f"{where}: a range constraint on {bad[0]!r}, not a symbol's name")
                if k == "target" and isinstance(v, str):
                    targets.add(v)
                elif k == "expr_str":
                    why = expression_problem(v) if isinstance(v, str) else "a symbolic expression that is not text"
                    if why and len(problems) < 8:
                        problems.append(f"{where}: {why}")
                stack.append((v, depth + 1))
        elif isinstance(o, list):
            stack.extend((v, depth + 1) for v in o)
    refs: Refs = []
    for t in sorted(targets):
        if not export_target_ok(t):
            kind = "file-operator" if any(op in t.split(".") for op in FILE_OPS) else "operator"
            refs.append((t, kind, where))
    return refs, problems
