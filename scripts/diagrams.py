"""Regenerate docs/machine.md (Mermaid diagrams and tables) from src/machine.

Usage: uv run --frozen python scripts/diagrams.py [--check]
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from machine.diagram import render  # noqa: E402

TARGET = ROOT / "docs" / "machine.md"


def main() -> int:
    """Write docs/machine.md, or with --check fail when it is stale."""
    text = render()
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run scripts/diagrams.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
