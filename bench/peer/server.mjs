// PostGraphile 5 over the benchmark database: the peer `polygraph bench` measures against.
// Usage: node server.mjs  (PEER_DATABASE_URL, PEER_HOST, PEER_PORT, PEER_POOL_SIZE from env)
import { createServer } from "node:http";

import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const host = process.env.PEER_HOST ?? "127.0.0.1";
const port = Number(process.env.PEER_PORT ?? "58100");
const poolSize = Number(process.env.PEER_POOL_SIZE ?? "10");

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
