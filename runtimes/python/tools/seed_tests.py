"""Runs the seed plan's own Python runtime tests (its Task 9) against this runtime, as the seed
runs them.

    python tools/seed_tests.py [PLAN]

PLAN is the seed plan's Markdown text (default: $NANOFAAS_SEED_PLAN, else
``../shared/seed/openwhisk-warm-mode-plan.md`` next to the repository). The test files are not
kept in this repository: they are read from the plan each time, written into a scratch copy of
the seed's layout (``tests/conftest.py``, ``tests/test_app.py``, ``tests/fixtures/handler.py``
and ``src`` pointing at this runtime's sources), and the plan's own command (Task 9, step 5,
``PYTHONPATH=src:tests pytest tests/ -v``) is run there with the Python running this script
(its pytest, Flask and gunicorn; the seed's ``pip install -r requirements.txt`` is left out: it
would install the seed's older pins).

Exit codes: 0 the seed's tests passed (or the plan is absent and not required: SKIPPED is
printed), 1 they failed, 2 the plan is absent and NANOFAAS_REQUIRE_SEED=1, or its Task 9 is not
in the shape this script reads (a file or the command cannot be found).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent
REPO = RUNTIME.parent.parent
DEFAULT_PLAN = REPO.parent / "shared" / "seed" / "openwhisk-warm-mode-plan.md"


class PlanError(Exception):
    pass


def task_section(text: str, number: int) -> str:
    m = re.search(rf"^### Task {number}:.*?$(.*?)(?=^### Task |\Z)", text, re.M | re.S)
    if not m:
        raise PlanError(f"no '### Task {number}:' section")
    return m.group(1)


def blocks(section: str) -> list[tuple[str, str, str]]:
    """(text before the block, language, body) of every fenced block, in order."""
    out = []
    pos = 0
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", section, re.M | re.S):
        out.append((section[pos : m.start()], m.group(1), m.group(2)))
        pos = m.end()
    return out


def test_files(section: str) -> dict[str, str]:
    """The files Task 9 creates, keyed by their path under ``tests/``."""
    files: dict[str, str] = {}
    for before, lang, body in blocks(section):
        if lang != "python":
            continue
        first = body.splitlines()[0].strip() if body.strip() else ""
        named = re.fullmatch(r"#\s*tests/(\S+\.py)", first)
        step = re.findall(r"\*\*Step \d+: Create (?:test handler fixture|(\S+\.py))\*\*", before)
        if named:
            files[named.group(1)] = body
        elif step and step[-1]:
            files[step[-1]] = body
    for need in ("conftest.py", "test_app.py", "fixtures/handler.py"):
        if need not in files:
            raise PlanError(f"Task 9 has no {need} (found: {sorted(files)})")
    return files


def run_command(section: str) -> list[str]:
    """The plan's pytest command (the last ``&&`` part of Task 9's 'Run:' line)."""
    m = re.search(r"\*\*Step \d+: Run tests\*\*\s*\n+Run: `([^`]+)`", section)
    if not m:
        raise PlanError("Task 9 has no 'Run tests' step with a command")
    last = m.group(1).split("&&")[-1].strip()
    words = shlex.split(last)
    if "pytest" not in words:
        raise PlanError(f"the seed's command does not run pytest: {last!r}")
    return words


def main(argv: list[str]) -> int:
    plan = Path(argv[1] if len(argv) > 1 else os.environ.get("NANOFAAS_SEED_PLAN") or DEFAULT_PLAN)
    if not plan.is_file():
        if os.environ.get("NANOFAAS_REQUIRE_SEED") == "1":
            print(
                f"seed-tests: NANOFAAS_REQUIRE_SEED=1 but there is no seed plan at {plan}",
                file=sys.stderr,
            )
            return 2
        print(
            f"seed-tests: SKIPPED: no seed plan at {plan} (set NANOFAAS_SEED_PLAN; "
            "NANOFAAS_REQUIRE_SEED=1 makes this an error)",
            file=sys.stderr,
        )
        return 0
    try:
        section = task_section(plan.read_text(encoding="utf-8"), 9)
        files = test_files(section)
        words = run_command(section)
    except PlanError as e:
        print(f"seed-tests: cannot read the seed's tests from {plan}: {e}", file=sys.stderr)
        return 2

    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH"
        and not k.startswith(("HANDLER_", "EXECUTION_ID", "CALLBACK_", "TRACE_ID"))
    }
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == "pytest":  # the seed's pytest is this Python's
        words = [sys.executable, "-m", "pytest", *words[1:]]
    with tempfile.TemporaryDirectory(prefix="nanofaas-seed-tests-") as tmp:
        root = Path(tmp)
        (root / "src").symlink_to(RUNTIME / "src", target_is_directory=True)
        for name, body in files.items():
            path = root / "tests" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
        shown = " ".join(shlex.quote(w) for w in words)
        print(
            f"seed-tests: {' '.join(sorted(files))} from {plan.name}, Task 9; running "
            f"PYTHONPATH={env.get('PYTHONPATH', '')} {shown}",
            file=sys.stderr,
            flush=True,
        )
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run(words, cwd=root, env=env, timeout=300).returncode and 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
