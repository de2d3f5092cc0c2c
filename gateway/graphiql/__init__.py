"""GraphiQL, served whole by the gateway: the page works without internet access.

React, GraphiQL and its explorer plugin come from npm (`package.json` and its
`package-lock.json` beside this file; `make install` runs `npm ci`, which checks
every package against the lock's integrity hash). The gateway serves only the
files listed in `VENDOR_FILES`, and only when each matches the SHA-384 pinned
there, so the bytes a browser runs are the bytes reviewed. Each file's URL holds
its content hash: browsers may cache it for a year.

Why npm rather than a Python package that ships the files: the only such packages
are Django apps with few users, which would pin us to whatever GraphiQL they
bundled; npm's are the upstream files themselves, locked by integrity hash, and
npm is needed for the tests and the benchmark anyway.

The page itself has no inline script, so `CONTENT_SECURITY_POLICY` allows scripts
from the gateway only.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import logging
from dataclasses import dataclass
from html import escape
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

logger = logging.getLogger("polygraph.graphiql")

HERE = Path(__file__).resolve().parent
# Installed by `make graphiql` beside the checkout's other runtime files, not in this package.
NODE_MODULES = HERE.parents[1] / "var" / "graphiql" / "node_modules"
ASSET_PREFIX = "/graphiql"

# No 'unsafe-inline' or 'unsafe-eval' for scripts. GraphiQL's components set inline
# styles, hence 'unsafe-inline' for styles; its fonts are data: URIs in its CSS.
# `connect-src 'self'` covers the WebSocket to the same host and port.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The page's URL may carry an API key (the `polygraph dev-key` link): never
    # send it on as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # The page names its files by content hash; it must itself be revalidated.
    "Cache-Control": "no-store",
}

IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class VendorFile:
    name: str
    path: str  # under node_modules/
    sha384: str  # base64, as in a Subresource Integrity attribute


# In load order. A version bump in package.json changes these hashes: the new files
# are checked and pinned here, or the gateway refuses to serve them.
VENDOR_FILES = (
    VendorFile(
        "react.production.min.js",
        "react/umd/react.production.min.js",
        "tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8",
    ),
    VendorFile(
        "react-dom.production.min.js",
        "react-dom/umd/react-dom.production.min.js",
        "bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh",
    ),
    VendorFile(
        "graphiql.min.css",
        "graphiql/graphiql.min.css",
        "Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
    ),
    VendorFile(
        "graphiql.min.js",
        "graphiql/graphiql.min.js",
        "HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
    ),
    VendorFile(
        "plugin-explorer.css",
        "@graphiql/plugin-explorer/dist/style.css",
        "5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi",
    ),
    VendorFile(
        "plugin-explorer.umd.js",
        "@graphiql/plugin-explorer/dist/index.umd.js",
        "2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9",
    ),
)
OWN_FILES = ("page.css", "page.js")  # ours, after the vendor files

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

INSTALL_HINT = "run `make install` (or `make graphiql`)"


class AssetsMissing(Exception):
    """GraphiQL's files are absent or differ from the pinned hashes."""


@dataclass(frozen=True)
class Asset:
    url: str
    content_type: str
    body: bytes
    gzipped: bytes
    integrity: str


def _asset(name: str, body: bytes) -> Asset:
    digest = hashlib.sha384(body).digest()
    # A URL-safe slice of the hash names this version of the file.
    version = base64.urlsafe_b64encode(digest)[:16].decode()
    return Asset(
        url=f"{ASSET_PREFIX}/{version}/{name}",
        content_type=CONTENT_TYPES[Path(name).suffix],
        body=body,
        # mtime=0: the same file gives the same bytes on every start and replica.
        gzipped=gzip.compress(body, mtime=0),
        integrity="sha384-" + base64.b64encode(digest).decode(),
    )


# Once per process: gzipping the files takes about half a second.
@functools.cache
def _load(node_modules: Path) -> tuple[Asset, ...]:
    assets = []
    for vendor in VENDOR_FILES:
        path = node_modules / vendor.path
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise AssetsMissing(f"{path} is missing: {INSTALL_HINT}") from None
        asset = _asset(vendor.name, body)
        if asset.integrity != f"sha384-{vendor.sha384}":
            raise AssetsMissing(
                f"{path} does not match its pinned hash ({asset.integrity}, expected"
                f" sha384-{vendor.sha384}): {INSTALL_HINT}; after a version change, review"
                " the new file and pin its hash in gateway/graphiql/__init__.py"
            )
        assets.append(asset)
    assets.extend(_asset(name, (HERE / name).read_bytes()) for name in OWN_FILES)
    return tuple(assets)


def _page(assets: tuple[Asset, ...]) -> str:
    stylesheets, scripts = [], []
    for asset in assets:
        if asset.url.endswith(".css"):
            stylesheets.append(
                f'    <link rel="stylesheet" href="{asset.url}" integrity="{asset.integrity}" />'
            )
        else:
            scripts.append(f'    <script src="{asset.url}" integrity="{asset.integrity}"></script>')
    template = Template((HERE / "page.html").read_text())
    return template.substitute(stylesheets="\n".join(stylesheets), scripts="\n".join(scripts))


def _missing_page(problem: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8" />'
        "<title>GraphiQL is not installed</title></head><body>"
        "<h1>GraphiQL is not installed</h1>"
        f"<p>{escape(problem)}</p>"
        "<p>The GraphQL endpoint itself works: POST queries to this URL.</p>"
        "</body></html>"
    )


class GraphiQL:
    """The page and its files; `routes` serve the files, `page_response` the page."""

    def __init__(self, node_modules: Path = NODE_MODULES) -> None:
        try:
            assets = _load(node_modules)
        except AssetsMissing as exc:
            logger.warning("GraphiQL is not served: %s", exc)
            self.installed = False
            self.html = _missing_page(str(exc))
            self._assets: dict[str, Asset] = {}
        else:
            self.installed = True
            self.html = _page(assets)
            self._assets = {asset.url: asset for asset in assets}

    @property
    def routes(self) -> list[BaseRoute]:
        return [Route(ASSET_PREFIX + "/{version}/{name}", self._serve, methods=["GET", "HEAD"])]

    def page_response(self) -> HTMLResponse:
        return HTMLResponse(self.html, headers=PAGE_HEADERS)

    async def _serve(self, request: Request) -> Response:
        asset = self._assets.get(request.url.path)
        if asset is None:
            return PlainTextResponse("Not Found", 404)
        headers = {
            "Cache-Control": IMMUTABLE,
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        }
        body = asset.body
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type=asset.content_type)


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
