"""What a proxy's headers or an app's body tell the rules about a request."""

from __future__ import annotations

from server.config import ConsentSettings, Settings
from server.decide.context import ContextBuilder, device_class, locale_from_accept_language
from server.schemas import ContextIn, GeoIn, VisitorIn


def builder(**kwargs: object) -> ContextBuilder:
    return ContextBuilder(Settings(**kwargs))  # type: ignore[arg-type]


def test_device_classes() -> None:
    assert device_class("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148") == "mobile"
    assert device_class("Mozilla/5.0 (iPad; CPU OS 17_0)") == "tablet"
    assert device_class("Mozilla/5.0 (Linux; Android 14; SM-X710)") == "tablet"
    assert device_class("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari") == "mobile"
    assert device_class("Googlebot/2.1 (+http://www.google.com/bot.html)") == "bot"
    assert device_class("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0") == "desktop"
    assert device_class("") == "unknown"


def test_locale_is_the_first_language_range() -> None:
    assert locale_from_accept_language("fr-FR,fr;q=0.9,en;q=0.8") == "fr-FR"
    assert locale_from_accept_language("*") is None
    assert locale_from_accept_language("x" * 100) is None


def test_context_from_proxy_headers() -> None:
    headers = {
        b"x-original-uri": b"/fr/running?utm=x",
        b"cf-ipcountry": b"fr",
        b"cloudfront-viewer-city": b"Lyon",
        b"x-timezone": b"Europe/Paris",
        b"user-agent": b"Mozilla/5.0 (iPhone) Mobile",
        b"accept-language": b"fr-FR,fr;q=0.9",
        b"x-site": b"shop-fr",
    }
    ctx = builder().from_headers(headers, None, now=1_790_000_000.0)
    assert ctx.site == "shop-fr"
    assert ctx.url == "/fr/running?utm=x" and ctx.path == "/fr/running"
    assert ctx.geo.country == "FR" and ctx.geo.city == "Lyon"
    assert ctx.timezone == "Europe/Paris"
    assert ctx.device == "mobile" and ctx.locale == "fr-FR"
    assert ctx.consent is True


def test_site_from_host_mapping_and_query_wins() -> None:
    b = builder(site_hosts={"www.example.de": "shop-de"})
    assert b.from_headers({b"host": b"www.example.de:443"}, None, 0.0).site == "shop-de"
    assert b.from_headers({b"host": b"www.example.de"}, "shop-uk", 0.0).site == "shop-uk"
    assert b.from_headers({}, None, 0.0).site == "default"


def test_consent_signal_and_per_country_default() -> None:
    b = builder(consent=ConsentSettings(opt_in_countries=["DE"]))
    assert b.from_headers({b"cf-ipcountry": b"DE"}, None, 0.0).consent is False
    assert b.from_headers({b"cf-ipcountry": b"DE", b"x-consent": b"1"}, None, 0.0).consent
    assert b.from_headers({b"cf-ipcountry": b"FR"}, None, 0.0).consent is True
    assert b.from_headers({b"x-consent": b"denied"}, None, 0.0).consent is False
    body = ContextIn(geo=GeoIn(country="de"))
    assert b.from_body(body, 0.0).consent is False


def test_visitor_from_cookie_or_explicit_header() -> None:
    b = builder(trust_visitor_header=True)
    cookie = {b"cookie": b"a=1; edgeside_id=k9; b=2"}
    assert b.visitor_from_headers(cookie).ids == {"cookie": "k9"}
    explicit = b.visitor_from_headers({**cookie, b"x-visitor-id": b"email_sha256:abc"})
    assert explicit.ids == {"email_sha256": "abc"}
    assert b.visitor_from_headers({b"x-visitor-id": b"P-123"}).canonical == "P-123"
    assert b.visitor_from_headers({b"cookie": b"edgeside_id=\x01bad"}).anonymous
    assert b.visitor_from_headers({b"cookie": b"edgeside_id=" + b"x" * 9000}).anonymous


def test_an_untrusted_caller_cannot_name_a_visitor_by_header() -> None:
    """Issue 14, defect 6: `X-Visitor-Id: customer_id:C00003` from anyone named her (the old code
    honoured it from any caller). Without the `decide` scope or a trusted proxy: the cookie."""
    from server import auth

    b = builder()
    auth.configure(auth.Credentials.from_environ({"EDGESIDE_ADMIN_TOKEN": "t0k"}))
    try:
        cookie = {b"cookie": b"edgeside_id=k9"}
        named = {**cookie, b"x-visitor-id": b"customer_id:C00003"}
        assert b.visitor_from_headers(named).ids == {"cookie": "k9"}
        assert b.visitor_from_headers({b"x-visitor-id": b"P-1"}).anonymous
        trusted = {**named, b"authorization": b"Bearer t0k"}
        assert b.visitor_from_headers(trusted).ids == {"customer_id": "C00003"}
    finally:
        auth.configure(None)


def test_visitor_from_body_drops_unusable_ids() -> None:
    visitor = builder().visitor_from_body(VisitorIn(id="P-1", ids={"cookie": "k\n9", "e": "ok"}))
    assert visitor.canonical == "P-1"
    assert visitor.ids == {"e": "ok"}


def test_an_oversized_header_is_named() -> None:
    b = builder()
    assert b.oversized_header([(b"cookie", b"a" * 100), (b"x-big", b"b" * 9000)]) == b"x-big"
    assert b.oversized_header([(b"cookie", b"a" * 100)]) is None


def test_the_uri_header_is_configurable() -> None:
    """The page comes from the configured header (EDGESIDE_URI_HEADERS), the first present; the
    answer memos key by it, not by the default one."""
    b = builder(uri_headers=["X-Page-URI"])
    headers = {b"x-page-uri": b"/cart?x=1", b"x-original-uri": b"/other"}
    assert b.from_headers(headers, None, 0.0).path == "/cart"
    assert b.from_headers({b"x-original-uri": b"/other"}, None, 0.0).path is None
    keyed = b.key_headers(["path"])
    assert keyed is not None and b"x-page-uri" in keyed and b"x-original-uri" not in keyed
    default = builder()
    assert default.from_headers({b"x-forwarded-uri": b"/f"}, None, 0.0).path == "/f"
    assert (
        default.from_headers({b"x-original-uri": b"/o", b"x-forwarded-uri": b"/f"}, None, 0.0).path
        == "/o"
    )


def test_uri_headers_from_the_environment() -> None:
    from server.config import load_settings

    settings = load_settings(environ={"EDGESIDE_URI_HEADERS": "X-Page-URI"})
    assert settings.uri_headers == ["X-Page-URI"]


def test_a_remembered_context_is_the_one_its_headers_make() -> None:
    """`context_for` remembers contexts by some headers and reads the URI and referrer per
    request: every header `from_headers` reads must change its answer exactly as there."""
    import itertools

    b = builder(
        site_hosts={"www.example.de": "shop-de"}, uri_headers=["X-Original-URI", "X-Forwarded-URI"]
    )
    values: dict[bytes, tuple[bytes | None, ...]] = {
        b"x-original-uri": (None, b"", b"/p/1?a=1", b"/p/2"),
        b"x-forwarded-uri": (None, b"/f"),
        b"referer": (None, b"", b"https://a.example/x"),
        b"cf-ipcountry": (None, b"de", b"FR"),
        b"cloudfront-viewer-city": (None, b"Lyon"),
        b"x-timezone": (None, b"Europe/Paris"),
        b"accept-language": (None, b"fr-FR,fr;q=0.9", b"de"),
        b"user-agent": (None, b"Mozilla/5.0 (iPhone) Mobile", b"Googlebot"),
        b"x-consent": (None, b"denied", b"1"),
        b"x-site": (None, b"shop-uk"),
        b"host": (None, b"www.example.de:443"),
    }
    names = list(values)
    seen = 0
    for i, combo in enumerate(itertools.product(*values.values())):
        if i % 7:  # a spread of the combinations, each header varied against the others
            continue
        headers = {n: v for n, v in zip(names, combo, strict=True) if v is not None}
        for site in (None, "shop-fr"):
            now = 1_790_000_000.0 + i
            assert b.context_for(headers, site, now) == b.from_headers(headers, site, now)
            seen += 1
    assert seen > 1000
