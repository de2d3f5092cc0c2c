"""GraphiQL in a real browser, offline: Debian's chromium, driven by Playwright.

The gateway runs as `polygraph serve` on a free port against the test stack, and
the page is opened from the link `polygraph dev-key` prints, as a person would.
Every request that leaves the machine's loopback is refused, so a page that still
needed a CDN would stay on "Loading...".
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, Request, Route, async_playwright, expect

from gateway.graphiql import CONTENT_SECURITY_POLICY
from gateway.settings import Settings
from resolvers.tasks import TASK_UPDATED_CHANNEL
from stores import RedisStore
from tests.support.waiting import until

CHROMIUM = "/usr/bin/chromium"
# What works in this project's sandboxes: without the background-networking flags,
# chromium keeps dialling Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POLYGRAPH = Path(sys.executable).with_name("polygraph")
# The longest a broken page may keep the test waiting; a working one answers at once.
PATIENCE_MS = 60_000
# `expect` has its own limit (5 s), short for a loaded machine.
expect.set_options(timeout=PATIENCE_MS)


@dataclass(frozen=True)
class Gateway:
    origin: str
    link: str  # as `polygraph dev-key` printed it
    api_key: str
    events_namespace: str
    log: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment(settings: Settings, port: int, namespace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYGRAPH_")}
    env.update(
        POLYGRAPH_PROFILE="test",
        POLYGRAPH_HOST="127.0.0.1",
        POLYGRAPH_PORT=str(port),
        POLYGRAPH_LOG_LEVEL="warning",
        POLYGRAPH_POSTGRES_DSN=settings.postgres_dsn.get_secret_value(),
        POLYGRAPH_NEO4J_URI=settings.neo4j_uri,
        POLYGRAPH_NEO4J_PASSWORD=settings.neo4j_password.get_secret_value(),
        POLYGRAPH_REDIS_URL=settings.redis_url.get_secret_value(),
        POLYGRAPH_EVENTS_NAMESPACE=namespace,
        POLYGRAPH_GRAPHIQL="true",
    )
    return env


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    port = _free_port()
    namespace = f"polygraph-graphiql-{secrets.token_hex(4)}"
    env = _environment(settings, port, namespace)
    printed = subprocess.run(
        [str(POLYGRAPH), "dev-key"], env=env, capture_output=True, text=True, check=True
    ).stdout
    link = next(line.strip() for line in printed.splitlines() if "/graphql?" in line)
    api_key = re.search(r"API key \([^)]*\): (\S+)", printed)
    assert api_key, printed
    log = tmp_path / "gateway.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(POLYGRAPH), "serve"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield Gateway(f"http://127.0.0.1:{port}", link, api_key.group(1), namespace, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        # Shown by pytest when the test fails.
        print(f"gateway log:\n{log.read_text()}")


async def _until_serving(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.origin) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/health/live")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await until(ready, limit_s=PATIENCE_MS / 1000)
        except TimeoutError:
            pytest.fail("the gateway did not start; its log is below")


@pytest.fixture
async def page(gateway: Gateway) -> AsyncIterator[Page]:
    await _until_serving(gateway)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context()
            context.set_default_timeout(PATIENCE_MS)
            yield await context.new_page()
        finally:
            await browser.close()


async def _editor_run(page: Page, document: str, operation: str) -> None:
    """Replace the query editor's text with `document` and run it, as a person would."""
    await page.locator(".graphiql-query-editor .CodeMirror").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(document)
    # GraphiQL parses the editor's text a moment after each change and picks HTTP or
    # the WebSocket from that parse: run once it has parsed the new text.
    await page.wait_for_function(
        """operation => {
            const editor = document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror;
            const parsed = editor.documentAST;
            return parsed !== null && parsed !== undefined
                && parsed.definitions[0].operation === operation;
        }""",
        arg=operation,
    )
    await page.keyboard.press("Control+Enter")


async def test_graphiql_runs_a_query_and_a_subscription_offline(
    page: Page, gateway: Gateway, redis: RedisStore
) -> None:
    left_loopback: list[str] = []
    problems: list[str] = []

    async def only_loopback(route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            left_loopback.append(request.url)
            await route.abort("internetdisconnected")

    await page.context.route("**/*", only_loopback)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            else None
        ),
    )

    response = await page.goto(gateway.link)
    assert response is not None and response.ok
    # Everything below runs under the page's own policy: scripts from the gateway only.
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # The link's headers are in the headers editor, the schema loaded (the explorer
    # lists root fields).
    await expect(page.locator(".graphiql-editor-tool")).to_contain_text(gateway.api_key)

    await _editor_run(page, "query { viewer { email role } }", "query")
    result = page.locator(".result-window")
    await expect(result).to_contain_text('"email": "admin@polygraph.local"')
    await expect(result).to_contain_text('"role": "ADMIN"')

    # The subscription signs in over the WebSocket with the same headers; once the
    # gateway subscribed to the channel, a task created elsewhere shows up on screen.
    await _editor_run(
        page, "subscription { taskUpdated { change task { title } } }", "subscription"
    )
    channel = f"{gateway.events_namespace}:{TASK_UPDATED_CHANNEL}"

    async def subscribed() -> bool:
        counts = await redis.client.pubsub_numsub(channel)
        return bool(counts and counts[0][1] == 1)

    await until(subscribed, limit_s=PATIENCE_MS / 1000)
    title = f"seen in GraphiQL {secrets.token_hex(4)}"
    async with httpx.AsyncClient(base_url=gateway.origin) as client:
        created = await client.post(
            "/graphql",
            json={
                "query": "mutation($t: String!) { createTask(input: {title: $t}) { userErrors { code } } }",
                "variables": {"t": title},
            },
            headers={"x-api-key": gateway.api_key},
        )
    assert created.json()["data"]["createTask"]["userErrors"] == []
    await expect(result).to_contain_text(f'"title": "{title}"')
    await expect(result).to_contain_text('"change": "created"')

    assert left_loopback == []
    assert problems == []
    # Nor did the gateway fail anywhere (GraphiQL's introspection once did).
    log = await asyncio.to_thread(gateway.log.read_text)
    assert "Traceback" not in log and "ERROR" not in log, log
