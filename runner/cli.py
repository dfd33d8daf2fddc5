"""The ``loadproof`` command: parse options, validate, then call the same functions the
notebooks call. Only LoadproofError is caught; it prints ``error: ...`` and exits with the
error's documented code (see runner/errors.py and the README)."""

from __future__ import annotations

import argparse
import sys

from .errors import LoadproofError


def cmd_serve(args: argparse.Namespace) -> int:
    from services.orchestrator.__main__ import run_serve

    return run_serve(args)


def build_parser() -> argparse.ArgumentParser:
    from services.orchestrator.__main__ import add_serve_arguments

    parser = argparse.ArgumentParser(prog="loadproof", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="start the reference service (embedded PostgreSQL)")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except LoadproofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
