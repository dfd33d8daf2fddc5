"""``python -m loadproof.orchestrator``: the same start as ``loadproof serve``."""

from __future__ import annotations

import argparse
import sys


def parse_set(items: list[str]) -> dict[str, str]:
    from .settings import ProfileError  # here, so `loadproof --help` stays light

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ProfileError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="baseline",
                        help="baseline, optimized, or a path to a profile .toml (default baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--database-url", default=None,
                        help="use this PostgreSQL instead of the embedded one (or DATABASE_URL)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one profile setting, e.g. --set pool_size=20")


def run_serve(args: argparse.Namespace) -> int:
    from .server import serve
    from .settings import ProfileError, load_settings

    try:
        settings = load_settings(args.profile, **parse_set(args.set))
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings, host=args.host, port=args.port, database_url=args.database_url)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator", description="The reference service.")
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
