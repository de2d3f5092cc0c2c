"""GraphiQL's files as the gateway serves them (the browser test runs the page itself)."""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from gateway.graphiql import IMMUTABLE, NODE_MODULES, VENDOR_FILES, GraphiQL


def _client(graphiql: GraphiQL) -> TestClient:
    return TestClient(Starlette(routes=graphiql.routes))


@pytest.fixture(scope="module")
def graphiql() -> GraphiQL:
    return GraphiQL()


@pytest.fixture(scope="module")
def client(graphiql: GraphiQL) -> Iterator[TestClient]:
    with _client(graphiql) as test_client:
        yield test_client


def _urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/graphiql/[^"]+)"', html)


def test_the_page_loads_every_file_from_the_gateway(graphiql: GraphiQL) -> None:
    assert graphiql.installed
    assert "://" not in graphiql.html  # no CDN, no other origin
    # No inline script: the Content-Security-Policy allows scripts from the gateway only.
    scripts = re.findall(r"<script([^>]*)>", graphiql.html)
    assert scripts and all('src="/graphiql/' in attributes for attributes in scripts)
    names = [url.rsplit("/", 1)[1] for url in _urls(graphiql.html)]
    assert sorted(names) == sorted([f.name for f in VENDOR_FILES] + ["page.css", "page.js"])


def test_files_are_served_with_their_type_and_cached_for_a_year(
    graphiql: GraphiQL, client: TestClient
) -> None:
    for url in _urls(graphiql.html):
        response = client.get(url, headers={"accept-encoding": "identity"})
        assert response.status_code == 200, url
        expected = "text/css" if url.endswith(".css") else "text/javascript"
        assert response.headers["content-type"] == f"{expected}; charset=utf-8", url
        assert (
            response.headers["cache-control"]
            == IMMUTABLE
            == ("public, max-age=31536000, immutable")
        )
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-encoding" not in response.headers


def test_vendor_files_are_the_pinned_bytes_and_gzip_is_offered(
    graphiql: GraphiQL, client: TestClient
) -> None:
    served = {url.rsplit("/", 1)[1]: url for url in _urls(graphiql.html)}
    for vendor in VENDOR_FILES:
        plain = client.get(served[vendor.name], headers={"accept-encoding": "identity"})
        assert plain.content == (NODE_MODULES / vendor.path).read_bytes()
        # httpx would decode it: ask for the raw bytes.
        with client.stream("GET", served[vendor.name], headers={"accept-encoding": "gzip"}) as r:
            assert r.headers["content-encoding"] == "gzip"
            assert r.headers["vary"] == "Accept-Encoding"
            assert gzip.decompress(b"".join(r.iter_raw())) == plain.content


def test_unknown_files_and_stale_versions_are_not_found(
    graphiql: GraphiQL, client: TestClient
) -> None:
    url = _urls(graphiql.html)[0]
    version, name = url.split("/")[2:]
    assert client.get(f"/graphiql/{version}/secret.js").status_code == 404
    assert client.get(f"/graphiql/AAAAAAAAAAAAAAAA/{name}").status_code == 404
    assert client.get(f"/graphiql/{version}/..%2Fpackage.json").status_code == 404


def test_without_npm_packages_the_page_says_how_to_install_them(tmp_path: Path) -> None:
    graphiql = GraphiQL(node_modules=tmp_path)
    assert not graphiql.installed
    assert "make install" in graphiql.html
    assert "Loading" not in graphiql.html
    assert graphiql.page_response().status_code == 200


def test_a_file_that_differs_from_its_pinned_hash_is_not_served(tmp_path: Path) -> None:
    copy = tmp_path / "node_modules"
    for vendor in VENDOR_FILES:
        (copy / vendor.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NODE_MODULES / vendor.path, copy / vendor.path)
    tampered = copy / VENDOR_FILES[-1].path
    tampered.write_bytes(tampered.read_bytes() + b"\n// changed\n")
    graphiql = GraphiQL(node_modules=copy)
    assert not graphiql.installed
    assert "does not match its pinned hash" in graphiql.html
    with _client(graphiql) as client:
        for url in _urls(GraphiQL().html):
            assert client.get(url).status_code == 404
