// Run worker.js on Node ≥ 18 for a local look and for the tests: an HTTP server on loopback that
// hands each request to the worker, with an in-memory stand-in for the runtime's `caches.default`.
//
//   node deploy/edge-workers/local.mjs --port 8787 --origin http://127.0.0.1:8000 \
//        --edgeside http://127.0.0.1:8080
//
// Not an edge runtime: one process, one cache, no limits enforced. It runs the same worker code.

import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const port = Number(args.port || 8787);
const origin = args.origin || "http://127.0.0.1:8000";
const env = {
  EDGESIDE_URL: args.edgeside || "http://127.0.0.1:8080",
  SITE: args.site || "shop-fr",
};

// caches.default: match/put by URL; a stored response is kept (as bytes) until the process ends.
const store = new Map();
globalThis.caches = {
  default: {
    async match(request) {
      const hit = store.get(request.url);
      return hit ? new Response(hit.body, { status: hit.status, headers: hit.headers }) : undefined;
    },
    async put(request, response) {
      const body = new Uint8Array(await response.arrayBuffer());
      store.set(request.url, { status: response.status, headers: [...response.headers], body });
    },
  },
};

// worker.js is an ES module with `export default`; load it as one whatever package.json says.
const source = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "worker.js"), "utf8");
const worker = (
  await import("data:text/javascript;base64," + Buffer.from(source).toString("base64"))
).default;

createServer(async (req, res) => {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (name !== "host" && name !== "connection") {
      headers.set(name, Array.isArray(value) ? value.join(", ") : value);
    }
  }
  const pending = [];
  try {
    const request = new Request(origin + req.url, { method: req.method, headers });
    const response = await worker.fetch(request, env, { waitUntil: (p) => pending.push(p) });
    const body = Buffer.from(await response.arrayBuffer());
    // Finish cache writes first, so a test's next request sees them (the runtime does it later).
    await Promise.all(pending);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(body);
  } catch (error) {
    res.writeHead(502, { "content-type": "text/plain" });
    res.end(`worker failed: ${error}\n`);
  }
}).listen(port, "127.0.0.1", () => {
  console.log(`worker on http://127.0.0.1:${port} (origin ${origin}, edgeside ${env.EDGESIDE_URL})`);
});
