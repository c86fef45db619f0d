"""The ``relprop`` command. For now: ``relprop demo`` explains a small network."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import relprop


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relprop`` console script."""
    parser = argparse.ArgumentParser(prog="relprop", description=relprop.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"relprop {relprop.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="explain a small seeded network and print the relevance")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from relprop.demo import main as demo

        demo()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
