"""The machine stays pure, and the committed diagrams are what the code generates."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = re.compile(
    r"^\s*(import|from) (ops|redis|socket|subprocess|time|datetime|random|os|pathlib|asyncio)\b",
    re.MULTILINE,
)


def test_machine_imports_nothing_that_does_io_or_reads_a_clock() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in sorted((ROOT / "src" / "machine").glob("*.py"))
        for match in FORBIDDEN.finditer(path.read_text())
    ]
    assert offenders == []


def test_committed_diagrams_are_fresh() -> None:
    from machine.diagram import render

    committed = (ROOT / "docs" / "machine.md").read_text()
    assert committed == render(), "docs/machine.md is stale: run scripts/diagrams.py"


def test_diagram_command_checks_freshness() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "diagrams.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_diagrams_show_guards_on_the_arrows() -> None:
    from machine.diagram import render

    text = render()
    assert "waiting_for_primary --> starting_primary: observe [elected_primary]" in text
    assert "forming --> bootstrapping: observe [can_bootstrap]" in text
    assert text.count("```mermaid") == 2
