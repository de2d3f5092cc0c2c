#!/usr/bin/env bash
# Installs the Debian packages a make target needs, only when missing:
#   run    redis-server (Redis 7), a JDK 17 and Maven (the Neo4j launcher), npm (GraphiQL's files)
#   test   run's, and chromium (the GraphiQL browser test) and wrk (the quick bench test);
#          Node.js 20 or newer (the TimescaleDB conformance tests run PGlite in Node)
#   bench  run's, and wrk (the load generator)
set -euo pipefail

target=${1:-run}
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
# Debian's npm brings Debian's Node.js, enough to install GraphiQL's files.
command -v npm >/dev/null || missing+=(npm)
case "$target" in
    run) ;;
    test)
        command -v chromium >/dev/null || missing+=(chromium)
        command -v wrk >/dev/null || missing+=(wrk)
        ;;
    bench)
        command -v wrk >/dev/null || missing+=(wrk)
        ;;
    *)
        echo "usage: $0 run|test|bench" >&2
        exit 2
        ;;
esac

if [ ${#missing[@]} -ne 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$target" = test ]; then
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$node_major" -lt 20 ]; then
        echo "make test needs Node.js 20 or newer (found $(node --version)): the TimescaleDB" \
            "conformance tests run PGlite in Node" >&2
        exit 1
    fi
fi
