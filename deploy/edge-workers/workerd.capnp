# worker.js on workerd, the open-source Workers runtime (npm `workerd`), for a local run and for
# tests/integration/test_workerd.py:
#
#   EDGESIDE_URL=http://127.0.0.1:8080 npx workerd serve workerd.capnp --socket-addr http=127.0.0.1:8787
#   curl -H 'Host: 127.0.0.1:8000' -H 'Cookie: edgeside_id=c-alice' http://127.0.0.1:8787/
#
# As on Cloudflare, the worker sits on the origin's hostname: `fetch(request)` goes to the host the
# request names, so the Host header says where the origin is (here a loopback address).
#
# Not the Cloudflare edge: workerd has no `caches.default` storage unless a cache service is
# configured (none here: every page is a MISS), no `request.cf` geo data, no subrequest limits.

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # Outbound fetches (edgeside, the origin). workerd's default network allows only public
    # addresses; edgeside and the origin are on a private network or loopback here.
    (name = "net", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "2024-09-23",
  globalOutbound = "net",
  bindings = [
    (name = "EDGESIDE_URL", fromEnvironment = "EDGESIDE_URL"),
    (name = "SITE", text = "shop-fr"),
  ],
);
