"""`polygraph`: serve the gateway, run the local stack, migrate, export the schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from gateway.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        result: int = args.handler(args, settings)
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polygraph", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the gateway (GraphiQL at /graphql)")
    serve.add_argument("--host", help="bind address (default: settings, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: settings, 8000)")
    serve.set_defaults(handler=_serve)

    stack = commands.add_parser("stack", help="start, stop or inspect the local stores")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--profile", choices=["dev", "test"], help="default: settings, dev")
    stack.set_defaults(handler=_stack)

    migrate = commands.add_parser("migrate", help="apply pending PostgreSQL and Neo4j migrations")
    migrate.set_defaults(handler=_migrate)

    schema = commands.add_parser("schema", help="the exported SDL (schema/schema.graphql)")
    schema.add_argument("action", choices=["export", "check"])
    schema.set_defaults(handler=_schema)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateway.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    host = args.host or settings.host
    port = args.port or settings.port
    print(
        f"Polygraph: GraphiQL at http://{host}:{port}/graphql, health at http://{host}:{port}/health"
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        lifespan="on",
    )
    return 0


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from infra.local import stack
    from infra.local._process import StackError
    from infra.local.profiles import get_profile

    profile = get_profile(args.profile or settings.profile)
    password = settings.neo4j_password.get_secret_value()
    try:
        if args.action == "up":
            print(f"stack {profile.name}: data in {profile.var_dir}")
            stack.up(profile, neo4j_password=password)
        elif args.action == "down":
            stack.down(profile, neo4j_password=password)
        print(stack.format_status(stack.status(profile, neo4j_password=password)))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from stores import GraphStore, PostgresStore, StoreError

    async def run() -> None:
        async with PostgresStore(settings.postgres_options()) as postgres:
            applied = await postgres.migrate()
            print(f"postgres: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
        async with GraphStore(settings.graph_options()) as graph:
            applied = await graph.migrate()
            print(f"neo4j: {'applied ' + ', '.join(applied) if applied else 'up to date'}")

    try:
        asyncio.run(run())
    except StoreError as exc:
        print(f"error: {exc}. Is the stack up? Try `polygraph stack up`.", file=sys.stderr)
        return 1
    return 0


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from schema import SDL_PATH, export_sdl

    sdl = export_sdl()
    if args.action == "export":
        SDL_PATH.write_text(sdl)
        print(f"wrote {SDL_PATH}")
        return 0
    if SDL_PATH.exists() and SDL_PATH.read_text() == sdl:
        print(f"{SDL_PATH} is up to date")
        return 0
    print(f"{SDL_PATH} is out of date; run `polygraph schema export`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
