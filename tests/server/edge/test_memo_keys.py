"""How the answer memos key a `/v1/edge` request: by the headers the rules can depend on.

The one property that matters: two requests with equal keys must make contexts equal in every field
the rules read — else a memo would give one request the other's answer.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.context import CLOCK_FIELDS, KEY_FIELDS, key_function
from server.config import ConsentSettings, Settings
from server.decide.context import ContextBuilder
from server.edge.memo_keys import MemoKeys

NOW = 1_790_000_000.0
LIMIT = 8 * 1024
# Opt-in countries make the country decide consent too, and hosts name sites.
BUILDER = ContextBuilder(
    Settings(
        consent=ConsentSettings(opt_in_countries=["DE"]),
        site_hosts={"shop.example": "shop-fr", "de.example": "shop-de"},
    )
)

# Every header the builder reads, some it does not, and a few values each, so that random
# requests often share headers and differ in one.
VALUES: dict[bytes, list[bytes]] = {
    b"x-original-uri": [b"/", b"/fr/run?x=1"],
    b"x-forwarded-uri": [b"/a", b"/b"],
    b"referer": [b"https://a.example/", b"https://b.example/"],
    b"user-agent": [b"Mozilla/5.0 (iPhone) Mobile", b"Mozilla/5.0 (X11) Firefox", b"Googlebot"],
    b"accept-language": [b"fr-FR,fr;q=0.9", b"de", b"*"],
    b"x-site": [b"shop-fr", b"shop-de", b""],
    b"host": [b"shop.example", b"de.example"],
    b"x-forwarded-host": [b"shop.example", b"fr.example"],
    b"x-consent": [b"1", b"0", b"yes", b"maybe"],
    b"cf-ipcountry": [b"fr", b"DE", b""],
    b"x-country-code": [b"US"],
    b"cf-region-code": [b"IDF", b"BY"],
    b"x-geo-region": [b"NW"],
    b"cf-ipcity": [b"Paris", b"Lyon"],
    b"x-geo-city": [b"Berlin"],
    b"cf-timezone": [b"Europe/Paris", b"America/New_York"],
    b"x-timezone": [b"Asia/Tokyo"],
    b"x-weather": [b"rain", b"sun"],
    b"accept-encoding": [b"gzip", b"br"],
    b"x-request-id": [b"1", b"2"],
}
header = st.sampled_from(sorted(VALUES)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(VALUES[name]))
)
request = st.lists(header, max_size=10)
fields = st.sets(st.sampled_from(KEY_FIELDS))


def keys_for(read: set[str] | None) -> MemoKeys:
    keys = MemoKeys(BUILDER, LIMIT)
    keys.use(read)
    return keys


def what_the_rules_see(read: set[str], raw: list[tuple[bytes, bytes]]) -> tuple[object, ...]:
    """The context fields rules reading `read` depend on: those, the clock's zone for an hour or
    weekday, and what the engine itself reads (site, consent)."""
    seen = set(read) | {"site", "consent"}
    for name in read:
        seen.update(CLOCK_FIELDS.get(name, ()))
    ctx = BUILDER.from_headers(dict(raw), None, NOW)
    return key_function(seen)(ctx)


@settings(max_examples=500)
@given(read=fields, first=request, change=header)
def test_requests_with_one_key_look_the_same_to_the_rules(
    read: set[str], first: list[tuple[bytes, bytes]], change: tuple[bytes, bytes]
) -> None:
    # The second request is the first with one header more (or another value for one it has).
    second = [*first, change]
    keys = keys_for(read)
    if keys.edge("GET", "/v1/edge", b"p=a", first) == keys.edge("GET", "/v1/edge", b"p=a", second):
        assert what_the_rules_see(read, first) == what_the_rules_see(read, second)


def test_no_header_left_out_of_a_key_changes_what_the_rules_read() -> None:
    # Every field alone, every header and value, on a bare request and on one that has a value
    # for every header: the property above, exhaustively for one changed header.
    bases = [[], [(name, values[-1]) for name, values in VALUES.items()]]
    for field in KEY_FIELDS:
        keys = keys_for({field})
        for base in bases:
            for name, values in VALUES.items():
                for value in values:
                    changed = [*base, (name, value)]
                    if keys.edge("GET", "/v1/edge", b"", base) == keys.edge(
                        "GET", "/v1/edge", b"", changed
                    ):
                        seen = what_the_rules_see({field}, base)
                        assert seen == what_the_rules_see({field}, changed), (field, name, value)


def test_every_context_field_has_its_headers() -> None:
    # A field without a mapping would key by every header (correct, but no sharing): a new context
    # field needs its headers named in ContextBuilder.
    assert BUILDER.key_headers(KEY_FIELDS) is not None


def test_rules_that_never_read_the_url_share_answers_across_pages() -> None:
    keys = keys_for({"locale", "geo.city"})
    page = [
        (b"cookie", b"edgeside_id=c-alice"),
        (b"accept-language", b"fr"),
        (b"cf-ipcity", b"Paris"),
    ]
    other_page = [*page, (b"x-original-uri", b"/other"), (b"user-agent", b"Firefox")]
    assert keys.edge("GET", "/v1/edge", b"p=a", page) == keys.edge(
        "GET", "/v1/edge", b"p=a", other_page
    )
    # …but not across visitors, cities or placements.
    bob = [(b"cookie", b"edgeside_id=c-bob"), *page[1:]]
    lyon = [*page[:2], (b"cf-ipcity", b"Lyon")]
    key = keys.edge("GET", "/v1/edge", b"p=a", page)
    assert key != keys.edge("GET", "/v1/edge", b"p=a", bob)
    assert key != keys.edge("GET", "/v1/edge", b"p=a", lyon)
    assert key != keys.edge("GET", "/v1/edge", b"p=b", page)


def test_rules_that_read_the_url_keep_it_in_the_key() -> None:
    keys = keys_for({"path"})
    page = [(b"x-original-uri", b"/a")]
    assert keys.edge("GET", "/v1/edge", b"", page) != keys.edge(
        "GET", "/v1/edge", b"", [(b"x-original-uri", b"/b")]
    )


def test_without_rules_every_header_is_keyed() -> None:
    keys = keys_for(None)
    page = [(b"cookie", b"edgeside_id=c-alice")]
    assert keys.edge("GET", "/v1/edge", b"", page) != keys.edge(
        "GET", "/v1/edge", b"", [*page, (b"user-agent", b"Firefox")]
    )


def test_a_header_over_the_limit_left_out_of_the_key_makes_a_request_unkeyable() -> None:
    # Never answered from a memo, so the route still refuses it with a 431. (One kept in the key
    # needs no check: a request with it is refused, so never remembered, so never matched.)
    huge = b"x" * (LIMIT + 1)
    keys = keys_for({"locale"})
    assert keys.edge("GET", "/v1/edge", b"", [(b"user-agent", huge)]) is None
    assert keys.fragment("GET", "/v1/fragments/a", b"", [(b"referer", huge)]) is None
    assert keys.edge("GET", "/v1/edge", b"", [(b"user-agent", b"x" * LIMIT)]) is not None


def test_requests_with_a_body_keep_their_body_headers_in_the_key() -> None:
    # A GET with a body is never remembered (server/edge/routes.py), so it must never match one
    # without.
    keys = keys_for({"locale"})
    assert keys.edge("GET", "/v1/edge", b"", []) != keys.edge(
        "GET", "/v1/edge", b"", [(b"content-length", b"5")]
    )


def test_opt_in_countries_make_the_country_part_of_every_key() -> None:
    keys = MemoKeys(
        ContextBuilder(Settings(consent=ConsentSettings(opt_in_countries=["DE"]))), LIMIT
    )
    keys.use(set())
    assert keys.edge("GET", "/v1/edge", b"", [(b"cf-ipcountry", b"DE")]) != keys.edge(
        "GET", "/v1/edge", b"", [(b"cf-ipcountry", b"FR")]
    )
