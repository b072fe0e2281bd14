"""Run an `experiments/` script in a subprocess, as a user would, from the repository root."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python experiments/<script> ARGS`; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    """The script refused its input as users should see it: exit 2, one `error: ...` line."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def corpus_file(folder: Path, content: bytes | None) -> Path:
    """A corpus path in folder holding content; None leaves the file missing."""
    path = folder / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    return path
