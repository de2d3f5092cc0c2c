// Composes Polygraph (a running gateway, read through `_service { sdl }`) with a
// second subgraph, `reviews`, that refers to Polygraph's agents, then runs one
// operation through Apollo's gateway and prints the result as JSON on stdout.
//
//   POLYGRAPH_URL=http://127.0.0.1:8000/graphql POLYGRAPH_API_KEY=... \
//   AGENT_ID=<global id> QUERY='{ reviews { agent { name } } }' node check.mjs
import { composeServices } from "@apollo/composition";
import { ApolloGateway, RemoteGraphQLDataSource } from "@apollo/gateway";
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const { POLYGRAPH_URL, POLYGRAPH_API_KEY, AGENT_ID, QUERY } = process.env;
if (!POLYGRAPH_URL || !POLYGRAPH_API_KEY || !AGENT_ID || !QUERY) {
  console.error("set POLYGRAPH_URL, POLYGRAPH_API_KEY, AGENT_ID and QUERY");
  process.exit(2);
}

const reviewsSdl = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key"])
  type Query { reviews: [Review!]! }
  type Review { score: Int! agent: Agent! }
  type Agent @key(fields: "id", resolvable: false) { id: ID! }
`);
const reviews = new ApolloServer({
  schema: buildSubgraphSchema({
    typeDefs: reviewsSdl,
    resolvers: {
      Query: { reviews: () => [{ score: 5, agent: { __typename: "Agent", id: AGENT_ID } }] },
    },
  }),
});
const { url: reviewsUrl } = await startStandaloneServer(reviews, { listen: { port: 0 } });

async function polygraph(query) {
  const response = await fetch(POLYGRAPH_URL, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": POLYGRAPH_API_KEY },
    body: JSON.stringify({ query }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

const { _service } = await polygraph("{ _service { sdl } }");
const composed = composeServices([
  { name: "polygraph", typeDefs: parse(_service.sdl), url: POLYGRAPH_URL },
  { name: "reviews", typeDefs: reviewsSdl, url: reviewsUrl },
]);
if (composed.errors) {
  console.log(JSON.stringify({ compositionErrors: composed.errors.map((e) => e.message) }));
  await reviews.stop();
  process.exit(1);
}

const gateway = new ApolloGateway({
  supergraphSdl: composed.supergraphSdl,
  buildService: ({ url }) =>
    new RemoteGraphQLDataSource({
      url,
      willSendRequest({ request }) {
        request.http.headers.set("x-api-key", POLYGRAPH_API_KEY);
      },
    }),
});
const router = new ApolloServer({ gateway });
await router.start();
const result = await router.executeOperation({ query: QUERY });
console.log(JSON.stringify(result.body.singleResult));
await router.stop();
await reviews.stop();
