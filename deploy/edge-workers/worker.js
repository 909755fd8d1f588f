// edgeside from an edge worker (Cloudflare Workers syntax; Fastly Compute JS differs only in how
// backends and the cache are named). Decide first, then look the page up under URL + decision key.
//
// Configure (wrangler.toml [vars]): EDGESIDE_URL = "https://decide.example.com" (edgeside, or a
// load balancer in front of it) and, optionally, SITE = "shop-fr" (else edgeside's `default`).
// No placements: edgeside reads the page from X-Original-URI and its rules' `pages:`.
//
// Limits, stated:
// - Tested on workerd, the open-source Workers runtime (workerd.capnp; personalisation and
//   fail-open, no cache there), and on Node (local.mjs: an in-memory stand-in for caches.default,
//   for the one-copy-per-decision caching). Not tested: Cloudflare's own cache semantics (TTL
//   handling, purge, tiered cache) and request.cf geo data.
// - The callout is a subrequest: it counts against the platform's subrequest limit (50 per request
//   on the Workers free plan) and adds one edge→edgeside round trip. Put edgeside close to the edge
//   (same region as the POPs, or on the edge nodes themselves); the 50 ms budget below is what a
//   decision may cost before the page goes out with the defaults.
// - caches.default is per data centre and not shared between POPs; the hit ratio per POP is what
//   `python -m bench.cdn` measures per nginx.
// - No ESI: per-visitor lists (home_recs) must be fetched by the browser from /v1/fragments or
//   stitched with HTMLRewriter — never put into the page key.
// - Geo comes from request.cf (Cloudflare); on Fastly use the geo API and send X-Geo-Country.

const KEY_RE = /^[A-Za-z0-9_.:+/=-]{1,64}$/;
const DECISION_RE = /^[A-Za-z0-9_.:;=,/+-]{1,1024}$/;
const FALLBACK_RE = /^[A-Za-z0-9_.:,-]{1,128}$/;
const DECIDE_BUDGET_MS = 50;

async function decide(request, env) {
  const url = new URL(request.url);
  const headers = new Headers({ "X-Original-URI": url.pathname + url.search });
  if (env.SITE) headers.set("X-Site", env.SITE);
  // Only the edgeside cookie, never the shop's session cookies; no client X-Visitor-Id (a visitor
  // must not borrow someone else's profile).
  const id = /(?:^|;\s*)edgeside_id=([^;]*)/.exec(request.headers.get("Cookie") || "");
  if (id) headers.set("Cookie", `edgeside_id=${id[1]}`);
  for (const name of ["X-Consent", "Accept-Language", "User-Agent", "Referer"]) {
    const value = request.headers.get(name);
    if (value) headers.set(name, value);
  }
  if (request.cf && request.cf.country) headers.set("CF-IPCountry", request.cf.country);
  try {
    const response = await fetch(`${env.EDGESIDE_URL}/v1/edge`, {
      headers,
      signal: AbortSignal.timeout(DECIDE_BUDGET_MS),
    });
    const key = response.headers.get("X-Edge-Key") || "";
    if (response.status === 204 && KEY_RE.test(key)) {
      const decision = response.headers.get("X-Edge-Decision") || "";
      const fallback = response.headers.get("X-Edge-Fallback") || "";
      return {
        key,
        decision: DECISION_RE.test(decision) ? decision : "",
        fallback: FALLBACK_RE.test(fallback) ? fallback : "",
      };
    }
  } catch (_) {
    // Timeout, refused, DNS: fail open below.
  }
  return { key: "fallback", decision: "", fallback: "edgeside-unavailable" };
}

export default {
  async fetch(request, env, ctx) {
    if (request.method !== "GET" && request.method !== "HEAD") return fetch(request);
    const { key, decision, fallback } = await decide(request, env);

    // The cache key: the URL plus the decision key (as a query parameter of a synthetic URL, since
    // the Cache API keys on URLs). Never `Vary: Cookie`.
    const cacheUrl = new URL(request.url);
    cacheUrl.searchParams.set("__edge_key", key);
    const cacheKey = new Request(cacheUrl.toString(), { method: "GET" });
    const cache = caches.default;
    // A runtime without a usable cache (workerd with no cache service configured throws "No Cache
    // was configured") still serves the page: every request is then a MISS.
    let response = await cache.match(cacheKey).catch(() => undefined);
    let status = "HIT";
    if (!response) {
      status = "MISS";
      // The origin renders for the decision, not for the visitor: no cookies go there.
      const originRequest = new Request(request, { headers: new Headers(request.headers) });
      originRequest.headers.delete("Cookie");
      for (const name of ["X-Edge-Key", "X-Edge-Decision", "X-Edge-Fallback", "X-Edge-Segments"]) {
        originRequest.headers.delete(name);
      }
      originRequest.headers.set("X-Edge-Key", key);
      if (decision) originRequest.headers.set("X-Edge-Decision", decision);
      if (fallback) originRequest.headers.set("X-Edge-Fallback", fallback);
      const fresh = await fetch(originRequest);
      response = new Response(fresh.body, fresh);
      response.headers.delete("Set-Cookie");
      if (fresh.status === 200) {
        ctx.waitUntil(cache.put(cacheKey, response.clone()).catch(() => undefined));
      }
    }
    response = new Response(response.body, response);
    response.headers.set("X-Cache-Status", status);
    response.headers.set("X-Edge-Key", key);
    // The copy is per decision: downstream shared caches must not keep it under the URL alone.
    response.headers.set("Cache-Control", "private, no-cache");
    return response;
  },
};
