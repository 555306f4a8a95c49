"""The README and docs/ stay true: links resolve, commands parse against the real CLI, the reference is current.

Nothing here runs a command; each `lanet ...` line of a fenced bash block goes through the same argument
parser as `lanet` itself (`lanet.cli.build_parser`), so a renamed subcommand or option fails here first.
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import io
import re
import shlex
from dataclasses import fields
from functools import cache
from pathlib import Path

import pytest

from lanet.config import Config, load_config, reference, set_override
from lanet.errors import LanetError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"

# Figures a page may link to before they are committed, each with who makes it. Keep this list short: an
# entry that is no longer needed (the file exists, or no page links to it) fails
# test_not_yet_produced_entries_are_still_needed, so whoever commits the file removes its entry.
NOT_YET_PRODUCED: set[str] = set()


def pages() -> list[Path]:
    """Every Markdown page a reader meets: README.md and everything under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


# ------------------------------------------------------------------------------------------- Markdown
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


def is_closing(line: str, fence: str) -> bool:
    """A closing fence: only the fence's character, at least as many as opened it."""
    text = line.strip()
    return len(text) >= len(fence) and set(text) == {fence[0]}


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[str, list[tuple[int, str]]]]]:
    """(prose lines, fenced blocks as (info, lines)), each line with its 1-based number."""
    prose: list[tuple[int, str]] = []
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    inside: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if inside is None and m:
            inside = m.group(1)
            blocks.append((m.group(2).lower(), []))
        elif inside is not None and is_closing(line, inside):
            inside = None
        elif inside is not None:
            blocks[-1][1].append((n, line))
        else:
            prose.append((n, line))
    return prose, blocks


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def links(path: Path) -> list[tuple[int, str]]:
    """Targets of the inline, reference-style and HTML links and images of a page, outside code. A link's
    text may run over several lines; it is reported at the line where it starts."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    numbers, lines = [], []
    for n, line in prose:
        if numbers and n != numbers[-1] + 1:  # a fenced block in between: no link spans it
            numbers.append(-1)
            lines.append("")
        numbers.append(n)
        lines.append(CODE_SPAN.sub("", line))
    text = "\n".join(lines)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)

    def line_of(offset: int) -> int:
        return numbers[bisect.bisect_right(starts, offset) - 1]

    found = [(line_of(m.start()), m.group(1)) for m in LINK.finditer(text)]
    found += [(line_of(m.start()), m.group(1)) for m in HTML_SRC.finditer(text)]
    found += [(n, m.group(1)) for n, line in zip(numbers, lines) if (m := REF_LINK.match(line))]
    return sorted(found)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every #anchor of a page: its headings' slugs (repeats numbered -1, -2, ...) and explicit ids."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return frozenset(out)


def test_every_link_and_image_resolves():
    broken, checked = [], 0
    for page in pages():
        for n, target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:: not ours to check
                continue
            checked += 1
            where = f"{rel(page)}:{n}: {target}"
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.is_relative_to(ROOT):
                broken.append(f"{where} (outside the repository)")
            elif not dest.exists():
                if rel(dest) not in NOT_YET_PRODUCED:
                    broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with anchor #{anchor} in {rel(dest)})")
    assert checked > 20, f"only {checked} links found: is the link pattern still right?"
    assert not broken, f"{len(broken)} of {checked} links do not resolve:\n" + "\n".join(broken)


def test_not_yet_produced_entries_are_still_needed():
    linked = {rel((page.parent / t.partition("#")[0]).resolve()) for page in pages() for _, t in links(page)
              if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)}
    stale = [p for p in NOT_YET_PRODUCED if (ROOT / p).exists() or p not in linked]
    assert not stale, f"remove {stale} from NOT_YET_PRODUCED in tests/test_docs.py: the file exists or nothing links it"


def test_slug_follows_github():
    assert slug("Test accuracy that swings between epochs: BatchNorm's running statistics") == \
        "test-accuracy-that-swings-between-epochs-batchnorms-running-statistics"
    assert slug("The `cpu-face` protocol") == "the-cpu-face-protocol"
    assert slug("Prediction: photos, folders, videos; ONNX and TorchScript") == \
        "prediction-photos-folders-videos-onnx-and-torchscript"
    assert slug("Reports and label audit") == "reports-and-label-audit"


# ------------------------------------------------------------------------------------------- commands
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&", ";;"}
REDIRECTS = re.compile(r"^\d*(>|>>|<|&>|>&)")
SHELL_WORDS = {"for", "do", "done", "then", "fi", "if", "else", "while", "cd", "export", "pip", "apt-get",
               "source", ".", "torchrun", "time", "env", "git", "cp", "ls", "mkdir"}
LAUNCHERS = {"torchrun", "time", "env"}  # a `lanet` word after one of these is a lanet command


def commands(path: Path) -> list[tuple[int, list[str]]]:
    """The simple commands of a page's shell blocks: continuation lines joined, comments dropped, split at
    `&&`, `;`, `|`, redirections cut off. Each as (line number, words)."""
    _, blocks = split_fences(path.read_text(encoding="utf-8"))
    out = []
    for info, lines in blocks:
        if info not in SHELL_BLOCKS:
            continue
        joined: list[tuple[int, str]] = []
        pending = None
        for n, line in lines:
            start, text = (n, line) if pending is None else pending
            if pending is not None:
                text = text + " " + line.strip()
            if text.rstrip().endswith("\\"):
                pending = (start, text.rstrip()[:-1])
                continue
            pending = None
            joined.append((start, text))
        for n, line in joined:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
            segment: list[str] = []
            for word in [*words, ";"]:
                if word in SEPARATORS:
                    if segment:
                        out.append((n, segment))
                    segment = []
                else:
                    segment.append(word)
    cut = []
    for n, words in out:
        for i, w in enumerate(words):
            if REDIRECTS.match(w):
                words = words[:i]
                break
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
            words = words[1:]
        while words and words[0] in {"do", "then", "else"}:
            words = words[1:]
        if words:
            cut.append((n, words))
    return cut


def lanet_words(words: list[str]) -> list[str] | None:
    """The arguments of a lanet command (after `lanet` or `python -m lanet.cli`), or None."""
    if words[0] == "lanet":
        return words[1:]
    if words[0].startswith("python") and words[1:3] == ["-m", "lanet.cli"]:
        return words[3:]
    if words[0] in LAUNCHERS and "lanet" in words:
        return words[words.index("lanet") + 1:]
    return None


@cache
def parser():
    from lanet.cli import build_parser

    top = build_parser()
    stack = [top]
    while stack:  # strict: no abbreviated options, as a reader copies them
        p = stack.pop()
        p.allow_abbrev = False
        for action in p._actions:  # noqa: SLF001
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                stack += list(action.choices.values())
    return top


@cache
def method_names() -> frozenset[str]:
    from lanet.methods.registry import available

    return frozenset(available())


@cache
def method_params() -> frozenset[str]:
    from lanet.methods.registry import available, get_method_class

    return frozenset(f.name for m in available() for f in fields(get_method_class(m).Params))


def check_lanet(argv: list[str]) -> str | None:
    """Why `lanet argv` would be refused before it runs, or None. Parses; never executes."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser().parse_args(argv)
    except SystemExit as exc:
        return None if exc.code == 0 else (err.getvalue().strip() or f"exit {exc.code}")
    if not getattr(args, "command", None):
        return None if "--version" in argv or not argv else "no subcommand"
    from lanet.bench import PRESETS, TABLE_ORDER
    from lanet.bench.tables import parse_method_spec
    from lanet.cli import _overrides

    problems = []
    if args.command in {"train", "prepare"}:
        assignments = _overrides(args)
    else:
        assignments = list(getattr(args, "overrides", []) or [])
    cfg = Config()
    shipped = getattr(args, "config", None)
    if shipped and shipped.startswith("configs/"):  # a file the project ships (my.yaml is the reader's own)
        try:
            cfg = load_config(ROOT / shipped)
        except LanetError as exc:
            problems.append(str(exc))
    for item in assignments:
        if "$" in item:  # a shell variable: the key is still checked, the value is not known
            item = item.split("=", 1)[0] + "="
            if not item.startswith("method.params."):
                continue
        try:
            key = item.split("=", 1)[0]
            if key.startswith("method.params."):
                name = key[len("method.params."):]
                if name not in method_params():
                    problems.append(f"{key}: no method has a hyperparameter {name!r}")
            else:
                set_override(cfg, item)
        except LanetError as exc:
            problems.append(str(exc))
    named = [getattr(args, "method.name", None)] + (getattr(args, "methods", "") or "").split(",")
    problems += [f"unknown method {m!r}" for m in named if m and "$" not in m and m.split(":")[0] not in method_names()]
    for m in named:
        if m and ":" in m and "$" not in m:  # a variant row: its hyperparameters must exist and parse
            try:
                parse_method_spec(m)
            except LanetError as exc:
                problems.append(str(exc))
    if args.command == "bench":
        problems += [f"unknown table {t!r}" for t in args.tables if t not in (*TABLE_ORDER, "all")]
        if args.preset not in PRESETS:
            problems.append(f"unknown preset {args.preset!r}")
    return "; ".join(problems) or None


@cache
def script_options(script: Path) -> frozenset[str]:
    """The option strings a benchmark script's argparse declares (read from its source, not imported)."""
    opts = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            opts.update(a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-"))
    return frozenset(opts | {"-h", "--help"})


@cache
def extras() -> frozenset[str] | None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return None
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return frozenset(data["project"].get("optional-dependencies", {}))


def check_other(words: list[str]) -> tuple[bool, str | None]:
    """(checked?, problem) for the commands that are not lanet's: benchmark scripts and pip extras."""
    if words[0].startswith("python") and len(words) > 1 and words[1].endswith(".py"):
        script = ROOT / words[1]
        if not script.is_file():
            return True, f"{words[1]}: no such file"
        unknown = [w.split("=")[0] for w in words[2:] if w.startswith("-") and not re.match(r"^-\d", w)
                   and w.split("=")[0] not in script_options(script)]
        return True, f"{words[1]} declares no option {unknown}" if unknown else None
    if words[:2] == ["pip", "install"] and extras() is not None:
        wanted = {x.strip() for w in words if "[" in w and w.startswith(".") for x in w[w.index("[") + 1:-1]
                  .split(",")}
        missing = sorted(wanted - extras())
        return bool(wanted), f"pyproject.toml has no extra {missing}" if missing else None
    return False, None


def test_every_command_in_the_docs_parses():
    """Every `lanet ...` line of a fenced bash block parses against the real CLI, with known subcommands,
    options, configuration keys, methods, hyperparameters, tables and presets; every `python
    benchmarks/X.py` names an existing script and only options it declares; every `pip install -e
    ".[x]"` names an existing extra. Nothing is executed."""
    failures, lanet_checked, other_checked, skipped = [], 0, 0, []
    for page in pages():
        for n, words in commands(page):
            where = f"{rel(page)}:{n}: {shlex.join(words)}"
            argv = lanet_words(words)
            if argv is not None:
                lanet_checked += 1
                why = check_lanet(argv)
                if why:
                    failures.append(f"{where}\n    -> {why}")
                continue
            done, why = check_other(words)
            other_checked += done
            if why:
                failures.append(f"{where}\n    -> {why}")
            elif not done:
                skipped.append(where)
    print(f"docs commands: {lanet_checked} lanet commands and {other_checked} others checked, "
          f"{len(skipped)} shell lines not checked")
    assert lanet_checked >= 20, f"only {lanet_checked} lanet commands found in the docs' bash blocks"
    assert not any(re.search(r"(^|\s)lanet\s", s.split(": ", 1)[1]) for s in skipped), \
        "a lanet command was not checked:\n" + "\n".join(skipped)
    assert not failures, f"{len(failures)} commands in the docs would fail:\n" + "\n".join(failures)


@pytest.mark.parametrize("argv, problem", [
    (["trian", "--out", "x"], "invalid choice"),
    (["train", "--out", "x", "--epoch", "3"], "unrecognized"),
    (["train", "--out", "x", "-o", "train.epoch=3"], "train.epoch"),
    (["train", "--out", "x", "-o", "method.params.KK=3"], "KK"),
    (["train", "--out", "x", "--method", "lanett"], "lanett"),
    (["bench", "table9", "--preset", "cpu"], "table9"),
    (["bench", "table1", "--preset", "gpu"], "gpu"),
    (["predict", "a.jpg", "--model", "m", "--detector", "mtcnn"], "invalid choice"),
])
def test_the_command_check_catches_mistakes(argv, problem):
    assert problem in (check_lanet(argv) or "")


def test_the_command_check_accepts_real_commands():
    assert check_lanet(["train", "--method", "lanet", "--noise", "symmetric", "--noise-rate", "0.3", "--out", "r",
                        "-o", "method.params.K=8"]) is None
    assert check_lanet(["bench", "all", "--preset", "paper", "--dry-run"]) is None


# ------------------------------------------------------------------------------------------- content
def test_configuration_page_has_the_current_reference():
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = [line for line in reference().splitlines() if line.strip() and line not in text]
    assert not missing, f"{rel(CONFIGURATION)} is stale; paste the output of `lanet config`: {missing[:3]}"


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()[:25]
    cmds = [x for x in lines if x.startswith("python -m venv")]
    assert len(cmds) == 2 and cmds[0].endswith("lanet demo") and cmds[1].endswith("python -m pytest -q")


def test_readme_stays_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 300, f"README.md has {n} lines; move reference material into docs/ (at most 300)"


def test_every_result_file_is_indexed():
    """docs/benchmarks.md's "Every committed result file" table names each file under benchmarks/results/."""
    import fnmatch

    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    table = text[text.index("## Every committed result file"):]
    patterns = [p for row in table.splitlines() if row.startswith("| `") for p in
                re.findall(r"`([^`]+)`", row.split("|")[1])]
    results = ROOT / "benchmarks" / "results"
    files = [f.relative_to(results).as_posix() for f in sorted(results.rglob("*")) if f.is_file()]
    unlisted = [f for f in files if not any(fnmatch.fnmatch(f, p) or fnmatch.fnmatch(f, p + ".*") for p in patterns)]
    assert files and not unlisted, f"add {unlisted} to the results index of docs/benchmarks.md"
    dead = [p for p in patterns if not any(fnmatch.fnmatch(f, p) for f in files)]
    assert not dead, f"the results index of docs/benchmarks.md names files that do not exist: {dead}"


def test_docs_index_lists_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "index.md" and f"]({p.name}" not in index]
    assert not unlisted, f"docs/index.md does not link {unlisted}"


def test_committed_figures_are_small_and_the_headline_exists():
    """Every committed PNG under docs/figures is at most 200 KB, and the README shows the headline figure."""
    big = [f"{p.name}: {p.stat().st_size // 1024} KB" for p in (ROOT / "docs" / "figures").glob("*.png")
           if p.stat().st_size > 200 * 1024]
    assert not big, f"figures over 200 KB: {big}"
    assert (ROOT / "docs" / "figures" / "headline.png").is_file()
    assert "](docs/figures/headline.png)" in (ROOT / "README.md").read_text()
