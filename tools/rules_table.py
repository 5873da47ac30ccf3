"""The README's table of supported ops, from the registry.

    python tools/rules_table.py            # print the markdown table (same as `tfshap rules --markdown`)
    python tools/rules_table.py --write    # replace the table between the markers in README.md
    python tools/rules_table.py --check    # exit 1 if README.md's table differs from the registry

The table lives between ``<!-- rules:begin -->`` and ``<!-- rules:end -->``;
``tests/test_cli.py`` fails when it is out of date.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

README = Path(__file__).resolve().parents[1] / "README.md"


def updated_readme(text: str, table: str) -> str:
    from tfshap.cli import RULES_BEGIN, RULES_END

    if RULES_BEGIN not in text or RULES_END not in text:
        raise SystemExit(f"{README}: the markers {RULES_BEGIN} and {RULES_END} are missing")
    head, rest = text.split(RULES_BEGIN, 1)
    _, tail = rest.split(RULES_END, 1)
    return f"{head}{RULES_BEGIN}\n{table.strip()}\n{RULES_END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The README table of supported ops, from the registry.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    group.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = parser.parse_args(argv)

    from tfshap.cli import rules_markdown

    table = rules_markdown()
    if not (args.write or args.check):
        print(table)
        return 0
    text = README.read_text(encoding="utf-8")
    new = updated_readme(text, table)
    if args.check:
        if new != text:
            print(f"{README.name} is out of date: run python tools/rules_table.py --write", file=sys.stderr)
            return 1
        print(f"{README.name} is up to date")
        return 0
    README.write_text(new, encoding="utf-8")
    print(f"wrote the table of {table.count(chr(10))} lines into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
