"""Every file the documentation or the code's comments name exists.

Scanned: README.md, docs/*.md, and every comment and docstring of the project's
Python files. A name counts as a repository path when it starts with one of the
repository's top-level directories (`chain/store.py`, `docs/protocol.md`, `bench/`,
`tests/actors/test_miner*.py`: a glob must match something), when it is a
top-level document in capitals (`README.md`; a document the repository does
not hold must not be cited), or when it is a relative link of a
Markdown page (`[x](mining.md#ray)`, resolved from the page's directory).
Absolute paths (`/var/lib/pow-node`), home paths (`~/.ray/auth_token`) and URLs
name things outside the repository and are left alone.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_DIRS = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
                  and p.name not in ("build", "dist") and not p.name.endswith(".egg-info")) + [".ci", "vectors"]
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", "node_modules"}

PATH_RE = re.compile(r"(?<![\w/.~:@-])((?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[\w.*/-]*[\w*/])")
DOC_RE = re.compile(r"(?<![\w/.~:-])([A-Z][A-Z_]*\.md)\b")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def python_files() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def comments_and_docstrings(path: Path) -> str:
    """The comments and docstrings of one Python file, as one text."""
    source = path.read_text()
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return "\n".join(parts)


def missing_paths(text: str) -> set[str]:
    """Repository paths named in `text` that name nothing in the repository."""
    missing = set()
    for match in PATH_RE.finditer(text):
        name = match.group(1).rstrip("/.")
        if "*" in name:
            if not any(ROOT.glob(name)):
                missing.add(name)
        elif not (ROOT / name).exists():
            missing.add(name)
    for match in DOC_RE.finditer(text):
        name = match.group(1)
        if not (ROOT / name).exists() and not (ROOT / "docs" / name).exists():
            missing.add(name)
    return missing


def missing_links(page: Path) -> set[str]:
    """Relative Markdown links of `page` whose file does not exist."""
    missing = set()
    for match in LINK_RE.finditer(page.read_text()):
        target = match.group(1).split("#", 1)[0]
        if not target or "://" in target or target.startswith(("mailto:", "/")):
            continue
        if not (page.parent / target).exists():
            missing.add(target)
    return missing


def test_the_scanner_finds_what_it_should():
    """The checks can fail: a made-up path, a cited document and a dead link are each caught."""
    assert missing_paths("see `chain/store.py` and chain/no_such_file.py") == {"chain/no_such_file.py"}
    assert missing_paths("tests/actors/test_miner*.py exist; tests/actors/test_nothing_like*.py do not") == \
        {"tests/actors/test_nothing_like*.py"}
    assert missing_paths("as PLANNING.md says; README.md") == {"PLANNING.md"}
    assert missing_paths("/var/lib/pow-node, ~/.ray/auth_token, https://example.org/docs/x.md") == set()
    assert comments_and_docstrings(Path(__file__)).count("chain/store.py") >= 1


def test_every_path_in_the_readme_and_docs_exists():
    problems = {}
    for page in doc_files():
        bad = missing_paths(page.read_text()) | missing_links(page)
        if bad:
            problems[str(page.relative_to(ROOT))] = sorted(bad)
    assert problems == {}


def test_every_path_in_code_comments_and_docstrings_exists():
    problems = {}
    for path in python_files():
        bad = missing_paths(comments_and_docstrings(path))
        if bad:
            problems[str(path.relative_to(ROOT))] = sorted(bad)
    assert problems == {}
