"""Turning what a request carries into the rules' `Context` and a visitor to look up.

`/v1/edge` reads the headers a proxy already has; `/v1/decide` reads its JSON body. Header names,
cookie name and the geo mapping are resolved to bytes once, when the builder is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import msgspec

import rules

from .. import auth
from ..config import Settings
from ..schemas import ContextIn, VisitorIn
from ..visitor import Visitor

# Real inputs (cookie, user agent, URI, geo) are a few hundred bytes; a request whose headers are
# larger is decided afresh rather than remembered (the memos are bounded in entries, not bytes).
MEMO_KEY_MAX_BYTES = 4096

# The headers that name the visitor: everything else a proxy sends describes the request.
# `authorization` too: whether `X-Visitor-Id` is honoured depends on the caller's `decide` scope
# (server/auth.py), so an answer remembered for a trusted caller is never a stranger's.
VISITOR_HEADERS = frozenset({b"cookie", b"x-visitor-id", b"authorization"})
# Headers every answer memo key holds (see `ContextBuilder.key_headers`).
_ALWAYS_KEYED = frozenset(
    {
        b"x-placements",
        b"x-site",
        b"host",
        b"x-forwarded-host",
        b"content-length",
        b"transfer-encoding",
    }
)
_MAX_CONTEXTS = 4096

_TRUE = frozenset({"1", "true", "yes", "granted", "y", "on"})
_FALSE = frozenset({"0", "false", "no", "denied", "n", "off"})


def device_class(user_agent: str) -> str:
    """A coarse device class from a User-Agent: bot, tablet, mobile or desktop."""
    ua = user_agent.lower()
    if not ua:
        return "unknown"
    if "bot" in ua or "crawl" in ua or "spider" in ua or "slurp" in ua:
        return "bot"
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"


def locale_from_accept_language(value: str) -> str | None:
    """The first language range of Accept-Language (`fr-FR,fr;q=0.9` → `fr-FR`)."""
    first = value.split(",", 1)[0].split(";", 1)[0].strip()
    if not first or first == "*" or len(first) > 35:
        return None
    return first


def parse_consent(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _printable(value: str, limit: int) -> bool:
    # Identifiers reach LMDB keys and (for experiments) hashes; anything else is not an id.
    return 0 < len(value) <= limit and value.isascii() and value.isprintable()


PLACEMENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class PlacementError(ValueError):
    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def split_placements(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def check_placements(names: list[str], limit: int) -> None:
    """Raise `PlacementError` unless `names` are 0 to `limit` well-formed placement names. None
    means the page's: the rules' `pages:` match the request's path to its placements (a proxy
    with a generic `auth_request` sends only the URI), and a page with none is an empty answer —
    never a 4xx a proxy would log and serve unpersonalised."""
    if len(names) > limit:
        raise PlacementError(f"{len(names)} placements asked for; at most {limit} per request")
    for i, name in enumerate(names):
        if not PLACEMENT_NAME.fullmatch(name):
            raise PlacementError(
                "placement names are 1-128 characters of letters, digits and _ . : -", i
            )


# The visitor of a request without consent or identifiers: nothing to look up.
ANONYMOUS = Visitor()


class ContextBuilder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        geo = settings.geo_headers
        self._country = tuple(h.lower().encode("latin-1") for h in geo.country)
        self._region = tuple(h.lower().encode("latin-1") for h in geo.region)
        self._city = tuple(h.lower().encode("latin-1") for h in geo.city)
        self._timezone = tuple(h.lower().encode("latin-1") for h in geo.timezone)
        self._weather = tuple(h.lower().encode("latin-1") for h in geo.weather)
        self._consent_header = settings.consent.header.lower().encode("latin-1")
        self._cookie_prefix = settings.cookie.name + "="
        self._cookie_type = settings.cookie.id_type
        self._trust_header = settings.trust_visitor_header
        self._opt_in = frozenset(c.upper() for c in settings.consent.opt_in_countries)
        self._site_hosts = {h.lower(): s for h, s in settings.site_hosts.items()}
        self._max_id = settings.limits.max_id_chars
        # What each context field is made of, for `key_headers`: every field `from_headers` fills
        # (tests/server/decide/test_context.py checks that this covers `rules.KEY_FIELDS`).
        uri = self._uri = tuple(h.lower().encode("latin-1") for h in settings.uri_headers)
        self._headers_by_field: dict[str, tuple[bytes, ...]] = {
            "site": (),  # always keyed
            "consent": (),  # always keyed
            "locale": (b"accept-language",),
            "url": uri,
            "path": uri,
            "referrer": (b"referer",),
            "device": (b"user-agent",),
            "timezone": self._timezone,
            "hour": self._timezone,  # from `now` in the visitor's zone
            "weekday": self._timezone,
            "weather": self._weather,
            "geo.country": self._country,
            "geo.region": self._region,
            "geo.city": self._city,
        }
        # Contexts but their URL, path, referrer and `now`, by the values of the headers they
        # are made of (`context_for`): every header `from_headers` reads but those three's.
        self._template_headers: tuple[bytes, ...] = tuple(
            dict.fromkeys(
                (
                    *self._country,
                    *self._region,
                    *self._city,
                    *self._timezone,
                    *self._weather,
                    self._consent_header,
                    b"x-site",
                    b"x-forwarded-host",
                    b"host",
                    b"accept-language",
                    b"user-agent",
                )
            )
        )
        self._contexts: dict[tuple[object, ...], rules.Context] = {}

    def oversized_header(self, raw: list[tuple[bytes, bytes]]) -> bytes | None:
        """The name of the first header longer than the configured limit, if any."""
        limit = self.settings.limits.max_header_bytes
        for name, value in raw:
            if len(value) > limit:
                return name
        return None

    # -- consent -------------------------------------------------------------------------------

    def consent(self, explicit: bool | None, country: str | None) -> bool:
        if explicit is not None:
            return explicit
        if country is not None and country.upper() in self._opt_in:
            return False
        return self.settings.consent.default

    # -- /v1/edge: headers ---------------------------------------------------------------------

    @staticmethod
    def _first(headers: Mapping[bytes, bytes], names: tuple[bytes, ...]) -> str | None:
        for name in names:
            value = headers.get(name)
            if value:
                text = value.decode("latin-1").strip()
                if text and len(text) <= 128 and text.isprintable():
                    return text
        return None

    def key_headers(self, fields: Iterable[str]) -> frozenset[bytes] | None:
        """The headers a `/v1/edge` request's answer can depend on, besides who asks, when the
        rules read only these context `fields` (`rules.Engine.context_fields`): the answer memos
        key requests by these alone, so a URL, referrer or user agent the rules never read does
        not make a known answer unknown. None (key by every header) for a field not mapped here.

        Always: the placements, what names the site, what decides consent (the header and the
        country), and the body headers (a request with a body is never remembered)."""
        names = set(_ALWAYS_KEYED)
        names.update((self._consent_header, *self._country))
        by_field = self._headers_by_field
        for field in fields:
            headers = by_field.get(field)
            if headers is None:
                return None
            names.update(headers)
        return frozenset(names)

    def context_for(
        self, headers: Mapping[bytes, bytes], site: str | None, now: float
    ) -> rules.Context:
        """`from_headers`, its costly part remembered. A proxy sends the same few values of the
        headers that make most of a context (language, browser, geo, consent, host) for many
        visitors, while the URI and the referrer differ on nearly every page view: those two
        are read per request, the rest remembered by the values of exactly the headers it is
        made of (`_template_headers`), so the key is small and a page view is a hit."""
        get = headers.get
        # map, not a list comprehension: ~0.35 µs less per request over ~20 headers (no frame).
        key = (site, *map(get, self._template_headers))
        template = self._contexts.get(key)
        if template is None:
            template = self.from_headers(headers, site, now)
            if len(self._contexts) >= _MAX_CONTEXTS:
                self._contexts.clear()
            self._contexts[key] = template
        url, path = self._url(headers)
        referrer = get(b"referer")
        return msgspec.structs.replace(
            template,
            url=url,
            path=path,
            referrer=referrer.decode("latin-1") if referrer else None,
            now=now,
        )

    def _url(self, headers: Mapping[bytes, bytes]) -> tuple[str | None, str | None]:
        """The page's URL (the first URI header set) and its path."""
        uri = b""
        for name in self._uri:
            uri = headers.get(name) or b""
            if uri:
                break
        url = uri.decode("latin-1") if uri else None
        return url, url.split("?", 1)[0] if url else None

    def from_headers(
        self, headers: Mapping[bytes, bytes], site: str | None, now: float
    ) -> rules.Context:
        country = self._first(headers, self._country)
        url, path = self._url(headers)
        if site is None:
            site = (headers.get(b"x-site") or b"").decode("latin-1") or None
        if site is None:
            host = (headers.get(b"x-forwarded-host") or headers.get(b"host") or b"").decode(
                "latin-1"
            )
            site = self._site_hosts.get(host.split(":", 1)[0].lower())
        accept_language = headers.get(b"accept-language")
        referrer = headers.get(b"referer")
        explicit = parse_consent(
            headers[self._consent_header].decode("latin-1")
            if self._consent_header in headers
            else None
        )
        return rules.Context(
            site=site or self.settings.default_site,
            locale=locale_from_accept_language(accept_language.decode("latin-1"))
            if accept_language
            else None,
            url=url,
            path=path,
            referrer=referrer.decode("latin-1") if referrer else None,
            device=device_class(headers.get(b"user-agent", b"").decode("latin-1")),
            timezone=self._first(headers, self._timezone),
            weather=self._first(headers, self._weather),
            geo=rules.Geo(
                country=country.upper() if country else None,
                region=self._first(headers, self._region),
                city=self._first(headers, self._city),
            ),
            consent=self.consent(explicit, country),
            now=now,
        )

    def may_name_visitors(self, headers: Mapping[bytes, bytes]) -> bool:
        """Identity by trust level (SPEC §6 Trust): a caller may name a visitor by anything but
        the first-party cookie only with the `decide` scope, or behind a proxy the settings
        trust to set `X-Visitor-Id` itself (`trust_visitor_header`)."""
        return auth.require(headers, "decide") is None

    def visitor_from_headers(self, headers: Mapping[bytes, bytes]) -> Visitor:
        """`X-Visitor-Id` (`type:value` or a canonical id) wins over the cookie — from a trusted
        proxy or a caller with the `decide` scope; from anyone else it is ignored (fail open:
        the cookie, or a stranger)."""
        explicit = headers.get(b"x-visitor-id")
        if explicit and (self._trust_header or self.may_name_visitors(headers)):
            text = explicit.decode("latin-1")
            if _printable(text, self._max_id):
                kind, sep, value = text.partition(":")
                if sep and value:
                    return Visitor(ids={kind: value})
                return Visitor(canonical=text)
        cookie = headers.get(b"cookie")
        if cookie and len(cookie) <= self.settings.limits.max_header_bytes:
            for part in cookie.decode("latin-1").split(";"):
                part = part.strip()
                if part.startswith(self._cookie_prefix):
                    value = part[len(self._cookie_prefix) :].strip('"')
                    if _printable(value, self._max_id):
                        return Visitor(ids={self._cookie_type: value})
                    break
        return Visitor()

    # -- /v1/decide: body ----------------------------------------------------------------------

    def from_body(self, body: ContextIn, now: float) -> rules.Context:
        geo = body.geo
        country = geo.country.upper() if geo is not None and geo.country else None
        return rules.Context(
            site=body.site or self.settings.default_site,
            locale=body.locale,
            url=body.url,
            path=body.path if body.path is not None else (body.url or "").split("?", 1)[0] or None,
            referrer=body.referrer,
            device=body.device,
            timezone=body.timezone,
            weather=body.weather,
            geo=rules.Geo(
                country=country,
                region=geo.region if geo is not None else None,
                city=geo.city if geo is not None else None,
            ),
            hour=body.hour,
            weekday=body.weekday,
            consent=self.consent(body.consent, country),
            now=body.now if body.now is not None else now,
        )

    def names_others(self, body: VisitorIn) -> bool:
        """True if `body` names the visitor by anything but the first-party cookie."""
        return body.id is not None or any(k != self._cookie_type for k in body.ids)

    def visitor_from_body(self, body: VisitorIn) -> Visitor:
        ids = {k: v for k, v in body.ids.items() if _printable(v, self._max_id)}
        canonical = body.id if body.id and _printable(body.id, self._max_id) else None
        return Visitor(canonical=canonical, ids=ids)
