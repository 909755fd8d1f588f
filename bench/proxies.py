"""Real nginx, Varnish and the demo origin on loopback, for the CDN tests, benchmark and demo.

Each helper renders its config from the template in `deploy/` into a private directory (pid file,
logs, temp and cache paths all inside it), starts the program in the foreground in its own session,
waits until it answers, and always stops it afterwards (`bench.procs.process`). Nothing needs
root; as root (CI) nginx workers run as root and Varnish runs without its jail, so they can use
the private directory.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .procs import ROOT, free_port, process, wait_http

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
NGINX_TEMPLATE = DEPLOY / "nginx" / "nginx.conf.template"
VARNISH_TEMPLATE = DEPLOY / "varnish" / "edgeside.vcl.template"
# The bare `auth_request` pattern of docs/cdn.md: no placements, no site.
NGINX_GENERIC_TEMPLATE = DEPLOY / "nginx" / "generic.conf.template"
ORIGIN_SCRIPT = DEPLOY / "demo_origin.py"

# The benchmark's baseline: the same page cache without personalisation, on its own port.
PLAIN_SERVER = """\
    server {
        listen @@PLAIN_LISTEN@@;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Cookie "";
            proxy_cache pages;
            proxy_cache_key "plain|$scheme$host$request_uri";
            proxy_cache_valid 200 5m;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }
    }
"""


_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")


def find_binary(name: str) -> str | None:
    """`name` on PATH or in the sbin directories Debian puts nginx and varnishd in."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin"):
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    return None


def render(template: str, values: dict[str, str]) -> str:
    """Fill `@@NAME@@` placeholders; a placeholder left over is an error, not a silent blank."""
    out = template
    for name, value in values.items():
        out = out.replace(f"@@{name}@@", value)
    for line in out.splitlines():
        left = _PLACEHOLDER.search(line.split("#", 1)[0])
        if left:
            raise ValueError(f"placeholder {left.group(0)} not filled in: {line.strip()!r}")
    return out


def render_nginx(
    *,
    listen: str,
    edgeside: str,
    origin: str,
    default_site: str = "shop-fr",
    callout_ttl: str = "1s",
    extra: str = "",
    generic: bool = False,
) -> str:
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    if generic:
        values = {"USER": user, "LISTEN": listen, "EDGESIDE": edgeside, "ORIGIN": origin}
        return render(NGINX_GENERIC_TEMPLATE.read_text(), values)
    return render(
        NGINX_TEMPLATE.read_text(),
        {
            "USER": user,
            "LISTEN": listen,
            "EDGESIDE": edgeside,
            "ORIGIN": origin,
            "DEFAULT_SITE": default_site,
            "CALLOUT_TTL": callout_ttl,
            "EXTRA": extra,
        },
    )


def render_vcl(*, edgeside: tuple[str, int], origin: tuple[str, int], default_site: str) -> str:
    return render(
        VARNISH_TEMPLATE.read_text(),
        {
            "EDGESIDE_HOST": edgeside[0],
            "EDGESIDE_PORT": str(edgeside[1]),
            "ORIGIN_HOST": origin[0],
            "ORIGIN_PORT": str(origin[1]),
            "DEFAULT_SITE": default_site,
        },
    )


@dataclass
class Running:
    """A started server: its base URL, its process and where its output goes."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5.0, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def demo_origin(work: Path) -> Iterator[Running]:
    """`deploy/demo_origin.py` on a free loopback port."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = work / f"origin-{port}.log"
    argv = [sys.executable, str(ORIGIN_SCRIPT), "--host", "127.0.0.1", "--port", str(port)]
    with process(argv, log=log, cwd=ROOT) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/__origin/health", proc=proc, log=log, timeout=15)
        yield Running(url, port, proc, log)


def nginx_config_check(nginx: str, config: str, work: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a rendered config, in a private prefix."""
    prefix = _nginx_prefix(work)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    return subprocess.run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _nginx_prefix(work: Path) -> Path:
    prefix = work / "nginx"
    for sub in ("logs", "temp", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return prefix


@contextmanager
def nginx(
    nginx_bin: str,
    work: Path,
    *,
    edgeside: str,
    origin: str,
    callout_ttl: str = "1s",
    plain: bool = False,
    generic: bool = False,
) -> Iterator[tuple[Running, str | None]]:
    """Real nginx in the foreground; yields it and, with `plain`, the URL of the baseline server.
    `generic`: the bare `auth_request` config (deploy/nginx/generic.conf.template) instead."""
    prefix = _nginx_prefix(work)
    port = free_port()
    plain_port = free_port() if plain else None
    extra = render(PLAIN_SERVER, {"PLAIN_LISTEN": f"127.0.0.1:{plain_port}"}) if plain else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_nginx(
            listen=f"127.0.0.1:{port}",
            edgeside=edgeside,
            origin=origin,
            callout_ttl=callout_ttl,
            extra=extra,
            generic=generic,
        )
    )
    log = prefix / "logs" / "stderr.log"
    argv = [nginx_bin, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs/error.log")]
    with process(argv, log=log, cwd=prefix) as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_listening(url, proc, prefix / "logs" / "error.log")
        plain_url = f"http://127.0.0.1:{plain_port}" if plain_port else None
        yield Running(url, port, proc, log), plain_url


@contextmanager
def varnish(
    varnishd: str, work: Path, *, edgeside: tuple[str, int], origin: tuple[str, int]
) -> Iterator[Running]:
    """Real varnishd in the foreground (`-F`), no jail so it runs the same as root or not."""
    work.mkdir(parents=True, exist_ok=True)
    vcl = work / "edgeside.vcl"
    vcl.write_text(render_vcl(edgeside=edgeside, origin=origin, default_site="shop-fr"))
    port = free_port()
    log = work / f"varnish-{port}.log"
    argv = [
        varnishd,
        "-F",
        "-j",
        "none",
        "-n",
        str(work / "varnish-n"),
        "-a",
        f"127.0.0.1:{port}",
        "-T",
        "none",
        "-f",
        str(vcl),
        "-s",
        "malloc,32m",
    ]
    with process(argv, log=log, cwd=work) as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_listening(url, proc, log, timeout=60)
        yield Running(url, port, proc, log)


def _wait_listening(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20
) -> None:
    # Any status means it listens (the path goes through the whole chain, so it may be a 200).
    wait_http(url + "/__ready", ok=tuple(range(100, 600)), proc=proc, log=log, timeout=timeout)


DEMO_BANNER = """\
edgeside CDN demo — origin {origin}, edgeside {edgeside}, nginx {proxy} (work dir {work})

Two visitors in different segments, each asking twice: the first answer is a MISS (the origin
renders the page for that decision), the second a HIT (the same copy, from nginx's cache).
{lines}
Try it yourself:
  curl -si {proxy}/ -H 'Cookie: edgeside_id=c-alice' | grep -iE '^x-(cache-status|edge-key)'
  curl -si {proxy}/ -H 'Cookie: edgeside_id=c-bruno' | grep -iE '^x-(cache-status|edge-key)'
  curl -si {proxy}/ -H 'Cookie: edgeside_id=c-alice' -H 'X-Consent: 0'   # the default page
  curl -s  {origin}/__origin/log                                         # what the origin rendered
Ctrl-C stops everything.
"""


def run_demo(data: Path, work: Path) -> int:
    """`make demo-cdn`: origin, edgeside and nginx on loopback until Ctrl-C."""
    import time

    from .procs import edgeside

    nginx_bin = find_binary("nginx")
    if nginx_bin is None:
        print("nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2
    with (
        demo_origin(work / "origin") as origin,
        edgeside(data, log_dir=work) as decider,
        nginx(
            nginx_bin,
            work / "nginx",
            edgeside=decider.url.removeprefix("http://"),
            origin=f"127.0.0.1:{origin.port}",
        ) as (proxy, _),
    ):
        lines = []
        for cookie in ("c-alice", "c-bruno"):
            for _ in range(2):
                response = httpx.get(
                    proxy.url + "/", headers={"Cookie": f"edgeside_id={cookie}"}, timeout=5
                )
                hero = re.search(r'<b class="variant">([^<]*)</b>', response.text)
                render = re.search(r'data-render="(\d+)"', response.text)
                lines.append(
                    f"  {cookie:8} {response.headers.get('x-cache-status', '?'):5} "
                    f"key={response.headers.get('x-edge-key', '?')} "
                    f"hero={hero.group(1) if hero else '-'} "
                    f"render#{render.group(1) if render else '?'}"
                )
        print(
            DEMO_BANNER.format(
                origin=origin.url,
                edgeside=decider.url,
                proxy=proxy.url,
                work=work,
                lines="\n".join(lines),
            ),
            flush=True,
        )
        try:
            while all(p.poll() is None for p in (origin.proc, decider.proc, proxy.proc)):
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    print("a process of the demo exited; see the logs in", work, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m bench.proxies", description="Run the CDN demo chain on loopback."
    )
    parser.add_argument("--data", help="edgeside data directory (default: the demo build)")
    args = parser.parse_args(argv)
    from server.offline.demo import DEFAULT_DEMO_DATA, ensure_demo

    # Absolute: bench.procs starts processes in another working directory.
    data = Path(args.data).resolve() if args.data else DEFAULT_DEMO_DATA
    ensure_demo(data)
    with tempfile.TemporaryDirectory(prefix="edgeside-demo-cdn-") as tmp:
        return run_demo(data, Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
