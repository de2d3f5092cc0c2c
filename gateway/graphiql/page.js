// GraphiQL for Polygraph: Strawberry's page, with every file served by the gateway
// itself (no CDN) and no inline script, so a strict Content-Security-Policy holds.
"use strict";

const EXAMPLE_QUERY = `# Welcome to Polygraph's GraphiQL.
#
# Run a query with Ctrl-Enter (or the play button). Open it from the link
# \`polygraph dev-key\` prints: that link puts an API key in the headers
# editor below, and subscriptions sign in with the same headers.

{
  viewer { email role }
  agents(first: 5) { totalCount edges { node { name role status } } }
}
`;

// The URL carries the editors' contents (`q`, `variables`, `headers`), so a link
// can open the page ready to run.
const parameters = {};
for (const entry of window.location.search.slice(1).split("&")) {
  const eq = entry.indexOf("=");
  if (eq >= 0) {
    parameters[decodeURIComponent(entry.slice(0, eq))] = decodeURIComponent(
      entry.slice(eq + 1).replace(/\+/g, " "),
    );
  }
}

function updateURL(data) {
  Object.assign(parameters, data);
  const search = Object.keys(parameters)
    .filter((key) => Boolean(parameters[key]))
    .map((key) => encodeURIComponent(key) + "=" + encodeURIComponent(parameters[key]))
    .join("&");
  history.replaceState(null, "", "?" + search);
}

const fetchURL = window.location.href.split("?")[0];
const subscriptionURL = new URL(fetchURL);
subscriptionURL.protocol = subscriptionURL.protocol === "https:" ? "wss:" : "ws:";
subscriptionURL.hash = "";

// GraphiQL sends the headers editor's contents with each query over HTTP, and as
// the graphql-transport-ws `connection_init` payload of each subscription, which is
// where the gateway reads a WebSocket's credentials.
const fetcher = GraphiQL.createFetcher({
  url: fetchURL,
  subscriptionUrl: subscriptionURL.toString(),
});

function GraphiQLWithExplorer() {
  const [query, setQuery] = React.useState(parameters.q || EXAMPLE_QUERY);
  const [variables, setVariables] = React.useState(parameters.variables);
  const [headers, setHeaders] = React.useState(parameters.headers);

  function onEditQuery(newQuery) {
    setQuery(newQuery);
    updateURL({ q: newQuery });
  }

  function onEditVariables(newVariables) {
    setVariables(newVariables);
    updateURL({ variables: newVariables });
  }

  const explorerPlugin = GraphiQLPluginExplorer.explorerPlugin();

  return React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultEditorToolsVisibility: true,
    plugins: [explorerPlugin],
    query: query,
    variables: variables,
    headers: headers,
    onEditQuery: onEditQuery,
    onEditVariables: onEditVariables,
    onEditHeaders: setHeaders,
    inputValueDeprecation: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: true,
  });
}

ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQLWithExplorer),
);
