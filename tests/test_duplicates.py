"""No helper written twice: a duplicate-code check over src/ (token shingles, names abstracted)."""

from __future__ import annotations

import ast
import io
import itertools
import keyword
import textwrap
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "effnet"
MIN_TOKENS = 40  # functions shorter than this are one-liners, not helpers worth sharing
THRESHOLD = 0.8  # Jaccard similarity of 6-token shingles that counts as the same code
SKIP: tuple[str, ...] = ()


def _shingles(source: str) -> set[tuple[str, ...]]:
    """6-token windows of the code, with names, numbers and strings abstracted."""
    tokens = []
    for t in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
        if t.type == tokenize.NAME:
            tokens.append(t.string if keyword.iskeyword(t.string) else "N")
        elif t.type in (tokenize.NUMBER, tokenize.STRING):
            tokens.append("0" if t.type == tokenize.NUMBER else "S")
        elif t.type == tokenize.OP:
            tokens.append(t.string)
    if len(tokens) < MIN_TOKENS:
        return set()
    return {tuple(tokens[i:i + 6]) for i in range(len(tokens) - 5)}


def _functions(spans: dict[str, tuple[str, int, int]] | None = None
               ) -> dict[str, set[tuple[str, ...]]]:
    """Shingles of every function in src/; `spans` gets each one's (file, first, last line)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel.startswith(SKIP):
            continue
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]  # the docstring
                if body and (sh := _shingles("\n".join(lines[body[0].lineno - 1:
                                                              node.end_lineno]))):
                    out[f"{rel}:{node.name}"] = sh
                    if spans is not None:
                        spans[f"{rel}:{node.name}"] = (rel, node.lineno, node.end_lineno)
    return out


def _nested(x: tuple[str, int, int], y: tuple[str, int, int]) -> bool:
    """Whether one function is defined inside the other (a closure shares its parent's code)."""
    return x[0] == y[0] and (x[1] <= y[1] <= y[2] <= x[2] or y[1] <= x[1] <= x[2] <= y[2])


def _similar(functions: dict[str, set]) -> list[tuple[float, str, str]]:
    return [(round(len(a & b) / len(a | b), 2), x, y)
            for (x, a), (y, b) in itertools.combinations(functions.items(), 2)
            if len(a & b) / len(a | b) >= THRESHOLD]


def test_the_check_finds_a_copied_helper():
    body = ("    tmp = path.with_name('.' + path.name + '.tmp')\n    tmp.write_text(text)\n"
            "    with open(tmp, 'rb+') as f:\n        os.fsync(f.fileno())\n"
            "    os.replace(tmp, path)\n    return len(text) + 1 if text else 0\n")
    renamed = body.replace("path", "p").replace("text", "t").replace("tmp", "temporary")
    other = "    x = [i * 2 for i in range(10) if i % 3 == 0]\n    return sum(x) / len(x)\n" * 3
    assert _similar({"a": _shingles(body), "b": _shingles(renamed), "c": _shingles(other)}) \
        == [(1.0, "a", "b")]


def test_no_function_is_written_twice():
    spans: dict[str, tuple[str, int, int]] = {}
    pairs = [p for p in _similar(_functions(spans)) if not _nested(spans[p[1]], spans[p[2]])]
    assert not pairs, f"near-identical functions (make one helper): {pairs}"
