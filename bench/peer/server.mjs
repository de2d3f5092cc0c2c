// PostGraphile 5 over the benchmark database: the peer `polygraph bench` measures against.
// Usage: node server.mjs  (PEER_DATABASE_URL, PEER_HOST, PEER_PORT, PEER_POOL_SIZE from env)
// PEER_WORKERS=N (default 1) runs N processes under Node's cluster module, each with its
// own pool, the primary handing out connections: the whole machine's peer.
import cluster from "node:cluster";
import { createServer } from "node:http";

import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const host = process.env.PEER_HOST ?? "127.0.0.1";
const port = Number(process.env.PEER_PORT ?? "25802");
const poolSize = Number(process.env.PEER_POOL_SIZE ?? "10");
const workers = Number(process.env.PEER_WORKERS ?? "1");

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  // A worker that dies stops the rest: a measurement on fewer workers would mislead.
  let stopping = false;
  let exited = 0;
  const stopAll = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGTERM");
  };
  cluster.on("exit", (worker, code) => {
    exited += 1;
    if (!stopping) {
      console.error(`peer: worker ${worker.process.pid} exited with ${code}; stopping`);
      stopAll();
    }
    if (exited === workers) process.exit(0);
  });
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, stopAll);
} else {
  serve();
}

function serve() {
  const preset = {
    extends: [PostGraphileAmberPreset],
    pgServices: [
      makePgService({
        connectionString: process.env.PEER_DATABASE_URL,
        schemas: ["public"],
        poolConfig: { max: poolSize },
      }),
    ],
    grafserv: { graphqlPath: "/graphql", watch: false, graphiql: false },
  };

  const pgl = postgraphile(preset);
  const serv = pgl.createServ(grafserv);
  const server = createServer();
  server.keepAliveTimeout = 65_000;
  serv.addTo(server).then(() => {
    server.listen(port, host, () => {
      console.log(`peer: PostGraphile on http://${host}:${port}/graphql`);
    });
  });

  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      server.close();
      Promise.resolve(pgl.release()).finally(() => process.exit(0));
    });
  }
}
