"""The web channel (#15) in process: sign-in and the session cookie, CSRF on every form, the
public status page without a database, language choice, and the API's own validation shown
beside a form's fields. Through the real app factory with the handler fakes (no database:
every page here answers before one would be needed, or shows the outage as a page)."""

from __future__ import annotations

import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest
from aiohttp import web
from handler_fakes import Fakes, operational_error
from problem_checks import AiohttpClient, Client
from web_signin import csrf, sign_in

from kernel.domain.ccrn import make_ccrn
from node import appkeys, background
from node.problems import Problem
from node.web import is_web_page, session


def _cookie_header(resp_headers: list[str], name: str) -> str:
    found = [h for h in resp_headers if h.startswith(name + "=")]
    assert found, resp_headers
    return found[-1]


async def test_sign_in_page_sets_a_strict_httponly_session_cookie(client: Client) -> None:
    """#15 item 1: the session cookie is HttpOnly and SameSite=Strict, without Secure over
    plain HTTP and with Secure once the request came over TLS (HAProxy's X-Forwarded-Proto)."""
    r = await client.get("/")
    cookie = _cookie_header(r.headers.getall("Set-Cookie"), session.COOKIE)
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    client.session.cookie_jar.clear()
    r = await client.get("/", headers={"X-Forwarded-Proto": "https"})
    cookie = _cookie_header(r.headers.getall("Set-Cookie"), session.COOKIE)
    assert "Secure" in cookie


async def test_sign_in_with_the_api_key_leads_to_the_accounts_pages(
    client: Client, fakes: Fakes
) -> None:
    """#15 item 1: a trader's key signs in (303 to /trader); without a session the trader's
    pages send the visitor to sign in instead."""
    r = await client.get("/trader/new", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"].startswith("/signin?next=")
    token = await csrf(client)
    r = await client.post(
        "/", data={"csrf": token, "api_key": fakes.keys["trader"]}, allow_redirects=False
    )
    assert r.status == 303
    assert r.headers["Location"] == "/trader"
    r = await client.get("/trader/new")
    assert r.status == 200
    assert "Submit cargo information" in await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


async def test_an_officer_signs_in_at_signin_and_lands_on_the_page_asked_for(
    client: Client, fakes: Fakes
) -> None:
    """#15 items 1 and 4: a page opened without a session sends the visitor to /signin with
    the page to come back to; that form posts to /signin and the sign-in goes back there."""
    r = await client.get("/officer/contingency", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/signin?next=%2Fofficer%2Fcontingency"
    r = await client.get(r.headers["Location"])
    assert r.status == 200
    page = await r.text()
    assert 'action="/signin?next=%2Fofficer%2Fcontingency"' in page
    token = await csrf(client, "/signin")
    r = await client.post(
        "/signin?next=%2Fofficer%2Fcontingency",
        data={"csrf": token, "api_key": fakes.keys["officer"]},
        allow_redirects=False,
    )
    assert r.status == 303
    assert r.headers["Location"] == "/officer/contingency"


@pytest.mark.parametrize(
    ("kind", "home"), [("officer", "/officer/contingency"), ("trader", "/trader")]
)
async def test_on_a_node_that_is_not_active_an_officer_lands_on_the_contingency_page(
    client: Client, fakes: Fakes, kind: str, home: str
) -> None:
    """#15 item 4: HAProxy sends sign-in to a node that is not active only when none is (the
    database down), and of the officers' pages it lets only the contingency one through; so an
    officer signing in there without a page to come back to, or opening the sign-in page while
    signed in, lands on it. Other accounts land on their own pages as always."""
    fakes.role.set("standby")
    token = await csrf(client, "/signin")
    r = await client.post(
        "/signin", data={"csrf": token, "api_key": fakes.keys[kind]}, allow_redirects=False
    )
    assert (r.status, r.headers["Location"]) == (303, home)
    r = await client.get("/signin", allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, home)
    fakes.role.set("active")
    r = await client.get("/signin", allow_redirects=False)
    assert r.headers["Location"] == {"officer": "/officer", "trader": "/trader"}[kind]


def _no_active_node_rule() -> Callable[[str, str], bool]:
    """Whether HAProxy's generated entry sends (method, path) to a live node while no node
    is active (the manual_ops acl, or a public_read GET), read from its acl lines."""
    from unit_fakes import HAPROXY_TLS

    from deploy import configgen
    from deploy.state import DEFAULT_TOPOLOGY
    from deploy.topology import load_topology

    text = configgen.haproxy_config(load_topology(DEFAULT_TOPOLOGY), HAPROXY_TLS)
    exact: dict[str, set[str]] = {}
    prefixes: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["acl"] and words[2] in ("path", "path_beg"):
            into = exact if words[2] == "path" else prefixes
            into.setdefault(words[1], set()).update(words[3:])

    def matches(acl: str, path: str) -> bool:
        return path in exact.get(acl, set()) or any(
            path.startswith(p) for p in prefixes.get(acl, set())
        )

    return lambda method, path: (
        matches("manual_ops", path) or (method == "GET" and matches("public_read", path))
    )


async def test_the_sign_in_page_works_through_haproxy_with_no_node_active(
    client: Client,
) -> None:
    """#15 item 4: with the database down (no node active) HAProxy passes to a live node
    everything the sign-in page needs: the form's POST, its stylesheet and script, the
    language switch, the page it sends an officer on to; and the sign-in page itself."""
    passes = _no_active_node_rule()
    r = await client.get("/signin?next=%2Fofficer%2Fcontingency")
    page = await r.text()
    needed = {("GET", "/signin"), ("GET", "/officer/contingency"), ("POST", "/signout")}
    needed |= {("POST", a) for a in re.findall(r'<form method="post" action="([^"?]+)', page)}
    needed |= {
        ("GET", u) for u in re.findall(r'<(?:link|script)[^>]+(?:href|src)="(/[^"]+)"', page)
    }
    needed |= {("GET", u) for u in re.findall(r'href="(/lang)\?', page)}
    assert {("POST", "/signin"), ("GET", "/lang"), ("GET", "/static/app.css")} <= needed
    assert [n for n in sorted(needed) if not passes(*n)] == []
    # ... while the pages that need the database still get HAProxy's 503.
    assert not passes("GET", "/officer")
    assert not passes("GET", "/")


async def test_a_wrong_key_is_refused_on_the_page(client: Client) -> None:
    """#15 item 1: an unknown key answers the sign-in page again with the reason, as HTML."""
    token = await csrf(client)
    r = await client.post("/", data={"csrf": token, "api_key": "rk_0badcafe_nope"})
    assert r.status == 401
    assert r.content_type == "text/html"
    assert "The API key is not valid." in await r.text()
    r = await client.get("/trader", allow_redirects=False)
    assert r.status == 303


async def test_sign_in_without_the_forms_token_is_refused(client: Client, fakes: Fakes) -> None:
    """#15 item 1: CSRF: the sign-in POST needs the session's token; a wrong one, or a form
    sent from another site, signs nobody in."""
    token = await csrf(client)
    r = await client.post("/", data={"csrf": "forged", "api_key": fakes.keys["trader"]})
    assert r.status == 403
    r = await client.post(
        "/",
        data={"csrf": token, "api_key": fakes.keys["trader"]},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status == 403
    r = await client.get("/trader", allow_redirects=False)
    assert r.status == 303


async def test_every_signed_in_form_checks_the_token(client: Client, fakes: Fakes) -> None:
    """#15 item 1: a signed-in POST without the session's CSRF token, or from another origin,
    is refused with 403 before anything is validated or written."""
    await sign_in(client, fakes, "trader")
    r = await client.post("/trader/new", data={"csrf": "nope", "package_count": "x"})
    assert r.status == 403
    assert "another site" in await r.text()
    token = await csrf(client, "/trader/new")
    r = await client.post(
        "/trader/new",
        data={"csrf": token, "package_count": "x"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status == 403


async def test_every_web_form_is_refused_without_the_sessions_token(
    client: Client, fakes: Fakes
) -> None:
    """#15 item 1: every POST route of the web channel (taken from the app's router, so a new
    form cannot be forgotten) answers 403 to a form without the session's CSRF token, signed
    in as the account kind the route is for, before anything is validated or written."""
    posts = sorted(
        {
            route.resource.canonical
            for route in client.app.router.routes()
            if route.method == "POST" and route.resource is not None and is_web_page(route)
        }
    )
    assert {"/signin", "/signout", "/trader/batch", "/officer/contingency/activate"} <= set(posts)
    for path in posts:
        client.session.cookie_jar.clear()
        kind = path.split("/")[1]
        if kind in fakes.keys:
            await sign_in(client, fakes, kind)
        else:
            await csrf(client)  # a visitor's session, with a token the form leaves out
        url = re.sub(r"\{[^}]+\}", "1", path)
        r = await client.post(url, data={"csrf": "", "reason": "r", "api_key": fakes.keys["sre"]})
        assert r.status == 403, (path, r.status)
        assert r.content_type == "text/html", path
    assert fakes.contingency.mode_for("LMC") == "normal"
    # The batch upload is multipart: its token must come before the file, and be right.
    from aiohttp import FormData

    await sign_in(client, fakes, "trader")
    form = FormData()
    form.add_field("file", b"direction\n", filename="batch.csv", content_type="text/csv")
    r = await client.post("/trader/batch", data=form)
    assert r.status == 403


async def test_the_apis_field_errors_are_shown_beside_the_fields(
    client: Client, fakes: Fakes
) -> None:
    """#15 item 2: a bad submission comes back as the form with the API's own messages
    beside the fields they name (422), values kept."""
    await sign_in(client, fakes, "trader")
    token = await csrf(client, "/trader/new")
    r = await client.post(
        "/trader/new",
        data={
            "csrf": token,
            "direction": "import",
            "lbcp": "LMC",
            "package_count": "twelve",
            "package_description": "cartons",
            "article_description": "shirts",
            "consignor_name": "",
            "consignor_address": "Shenzhen",
            "consignee_name": "Kowloon Co",
            "consignee_address": "Kowloon",
            "expected_at": "2030-01-07T16:30",
        },
    )
    assert r.status == 422
    text = await r.text()
    assert re.search(r'id="e-package_count">[^<]*integer', text), text
    assert 'id="e-consignor_name">field required' in text
    assert 'aria-invalid="true"' in text
    assert 'value="Kowloon Co"' in text


async def test_the_advance_window_rule_is_the_apis(client: Client, fakes: Fakes) -> None:
    """#15 item 2: a time under 30 minutes ahead is refused by the API's window rule, beside
    the time field (the fakes' clock is 2030-01-07 08:00 UTC = 16:00 in Hong Kong)."""
    await sign_in(client, fakes, "trader")
    token = await csrf(client, "/trader/new")
    form = {
        "csrf": token,
        "direction": "import",
        "lbcp": "LMC",
        "package_count": "3",
        "package_description": "cartons",
        "article_description": "shirts",
        "consignor_name": "A",
        "consignor_address": "B",
        "consignee_name": "C",
        "consignee_address": "D",
        "expected_at": "2030-01-07T16:10",
    }
    r = await client.post("/trader/new", data=form)
    assert r.status == 422
    assert 'id="e-expected_at">' in await r.text()


async def test_a_trucker_bad_ccrn_is_named_beside_the_ccrn_field(
    client: Client, fakes: Fakes
) -> None:
    """#15 item 3: the bundle form shows the API's CCRN check beside the CCRN field."""
    await sign_in(client, fakes, "trucker")
    token = await csrf(client, "/trucker")
    r = await client.post(
        "/trucker/bundle", data={"csrf": token, "vrn": "AB1234", "lbcp": "LMC", "ccrns": "1234"}
    )
    assert r.status == 422
    assert 'id="e-ccrns">' in await r.text()


SCANNED_LIST = re.compile(r'<input type="hidden" name="scanned" value="([^"]+)">')


async def test_successive_scans_add_up_and_are_bundled_together(
    client: Client, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 item 3: each scanned QR code (`/trucker?ccrn=...`) adds its CCRN to the ones
    scanned before in this session (once each, in scan order), all listed on the form; the
    bundle form sends them together with the typed ones to the API's bundle path, and once
    bundled they leave the list."""
    from node.web import trucker

    first, second, typed = make_ccrn(1), make_ccrn(2), make_ccrn(3)
    sent: list[list[str]] = []

    async def create_bundle(*args: Any) -> web.Response:
        sent.append(list(args[3].ccrns))
        return web.json_response({"id": 7}, status=201)

    async def visible_bundle(*args: Any) -> dict[str, Any]:
        raise Problem(404, "Not Found")  # the session's bundle list: none to show here

    monkeypatch.setattr(trucker.bundles, "create_bundle", create_bundle)
    monkeypatch.setattr(trucker.bundles, "visible_bundle", visible_bundle)
    await sign_in(client, fakes, "trucker")
    for ccrn in (first, second, first):
        r = await client.get(f"/trucker?ccrn={ccrn}")
        assert r.status == 200
    page = await r.text()
    assert SCANNED_LIST.findall(page) == [first, second]
    assert _textarea(page) == ""
    token = await csrf(client, "/trucker")
    r = await client.post(
        "/trucker/bundle",
        data=[("csrf", token), ("vrn", "AB1234"), ("lbcp", "LMC"), ("ccrns", typed)]
        + [("scanned", c) for c in SCANNED_LIST.findall(page)],
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == "/trucker/b/7"
    assert sent == [[first, second, typed]]
    r = await client.get("/trucker")
    assert r.status == 200
    assert SCANNED_LIST.findall(await r.text()) == []


def _textarea(page: str) -> str:
    m = re.search(r'<textarea id="f-ccrns"[^>]*>([^<]*)</textarea>', page)
    assert m is not None
    return m.group(1)


async def test_a_scanned_ccrn_can_be_removed_and_a_bad_one_is_named(
    client: Client, fakes: Fakes
) -> None:
    """#15 item 3: a scanned CCRN is taken off the list by its own button (a CSRF-checked
    form of its own, so Enter still sends the bundle); a bad one scanned is refused by the
    API's check, named beside the CCRN field, and the list stays as it was."""
    good, other = make_ccrn(1), make_ccrn(2)
    bad = other[:-1] + str((int(other[-1]) + 1) % 10)  # a wrong check digit
    await sign_in(client, fakes, "trucker")
    await client.get(f"/trucker?ccrn={good}")
    r = await client.get(f"/trucker?ccrn={bad}")
    page = await r.text()
    assert SCANNED_LIST.findall(page) == [good, bad]
    assert f'form="remove-scanned" name="ccrn" value="{good}"' in page
    token = await csrf(client, "/trucker")
    r = await client.post(
        "/trucker/bundle",
        data=[("csrf", token), ("vrn", "AB1234"), ("lbcp", "LMC"), ("ccrns", "")]
        + [("scanned", c) for c in (good, bad)],
    )
    assert r.status == 422
    page = await r.text()
    error = re.search(r'<p class="error" id="e-ccrns">([^<]+)</p>', page)
    assert error is not None, page
    assert error.group(1).startswith(f"{bad}: CCRN check digit"), error.group(1)
    assert SCANNED_LIST.findall(page) == [good, bad]
    r = await client.post("/trucker/scanned/remove", data={"csrf": token, "ccrn": bad})
    assert r.status == 200
    assert r.url.path == "/trucker"
    assert SCANNED_LIST.findall(await r.text()) == [good]
    # Not a CCRN's shape: into the typed field, for the API to name at bundling.
    r = await client.get("/trucker", params={"ccrn": "<x>"})
    page = await r.text()
    assert SCANNED_LIST.findall(page) == [good]
    assert _textarea(page) == "&lt;X&gt;"


async def test_a_page_of_another_kind_is_forbidden(client: Client, fakes: Fakes) -> None:
    """#15: a trucker's session does not open the trader's pages (the API's role check)."""
    await sign_in(client, fakes, "trucker")
    r = await client.get("/trader/new")
    assert r.status == 403
    assert r.content_type == "text/html"


async def test_sign_out_ends_the_session(client: Client, fakes: Fakes) -> None:
    """#15 item 1: sign-out (a CSRF-checked POST) removes the cookie; the pages then ask to
    sign in again."""
    await sign_in(client, fakes, "trader")
    token = await csrf(client, "/trader/new")
    r = await client.post("/signout", data={"csrf": token}, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/signin?notice=signed_out"
    r = await client.get("/trader/new", allow_redirects=False)
    assert r.status == 303


async def test_a_forged_cookie_is_no_session(client: Client) -> None:
    """#15 item 1: a cookie the node did not seal is ignored (the visitor is not signed in)."""
    client.session.cookie_jar.update_cookies(SimpleCookie(f"{session.COOKIE}=gAAAAABforged"))
    r = await client.get("/trader", allow_redirects=False)
    assert r.status == 303


async def test_a_suspended_account_is_signed_out(client: Client, fakes: Fakes) -> None:
    """#15 item 1: every page authenticates the session's key again (as the API does), so an
    account suspended after sign-in is sent back to the sign-in page."""
    await sign_in(client, fakes, "trader")
    client.app[appkeys.ACCOUNT_CACHE].clear()
    for stored in fakes.accounts.by_prefix.values():
        if stored.account.kind == "trader":
            object.__setattr__(stored.account, "status", "suspended")
    r = await client.get("/trader/new", allow_redirects=False)
    assert r.status == 303
    assert "notice=suspended" in r.headers["Location"]


async def test_an_outage_is_a_page_not_a_json_problem(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15: with PostgreSQL down, sign-in still works from the node's key cache and a page
    that needs the database answers 503 as an HTML page with Retry-After."""
    from handler_fakes import DownPool

    fakes.pool = DownPool(operational_error)
    client = await aiohttp_client(fakes.app())
    keycache = client.app[appkeys.KEYCACHE]
    await background.refresh_keycache_once(fakes.accounts, keycache)
    fakes.accounts.down = True
    await sign_in(client, fakes, "trader")
    r = await client.get("/trader")
    assert r.status == 503
    assert r.content_type == "text/html"
    assert "Retry-After" in r.headers


async def test_status_page_needs_no_sign_in_and_no_database(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 5: /status answers without a session and with PostgreSQL down, listing every
    LBCP as normal; after manual mode is switched on for one LBCP it shows that LBCP manual,
    the notice and the late-submission grace."""
    from handler_fakes import DownPool

    fakes.pool = DownPool(operational_error)
    client = await aiohttp_client(fakes.app())
    r = await client.get("/status")
    assert r.status == 200
    text = await r.text()
    assert 'data-mode="normal"' in text
    assert text.count('class="normal"') == 6
    assert "at least 30 minutes" in text
    assert "Set-Cookie" not in r.headers
    await fakes.contingency.activate(
        actor="officer:1", reason="test", lbcps=frozenset({"MKT"}), message="Paper forms at MKT"
    )
    r = await client.get("/status")
    text = await r.text()
    assert 'data-mode="manual"' in text
    assert re.search(r'data-lbcp="MKT">.*?class="manual"', text)
    assert "Paper forms at MKT" in text
    assert 'id="grace">Late submissions are accepted' in text


async def test_language_follows_the_switch_and_accept_language(client: Client) -> None:
    """#15: Traditional Chinese for an Accept-Language of zh-HK; the switch's cookie wins over
    the header; the page says its language in <html lang>."""
    r = await client.get("/status", headers={"Accept-Language": "zh-HK,zh;q=0.9,en;q=0.5"})
    text = await r.text()
    assert '<html lang="zh-Hant">' in text
    assert "系統狀況" in text
    r = await client.get("/lang?to=en&next=/status", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/status"
    r = await client.get("/status", headers={"Accept-Language": "zh-HK"})
    assert '<html lang="en">' in await r.text()


async def test_language_switch_goes_only_to_local_pages(client: Client) -> None:
    """#15: the switch's `next` is followed only to a path on this site (no open redirect)."""
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        r = await client.get("/lang", params={"to": "en", "next": target}, allow_redirects=False)
        assert r.headers["Location"] == "/", target


async def test_static_files_are_served_from_the_package(client: Client) -> None:
    """#15: the stylesheet and the script ship with the node (no CDN)."""
    for name in ("app.css", "app.js"):
        r = await client.get(f"/static/{name}")
        assert r.status == 200, name


async def test_a_valid_form_reaches_the_apis_write_path(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 2: a valid submission goes on to the API's write path with the form's token as
    its Idempotency-Key; with PostgreSQL down that path answers 503, shown as a page."""
    from handler_fakes import DownPool

    fakes.pool = DownPool(operational_error)
    client = await aiohttp_client(fakes.app())
    await sign_in(client, fakes, "trader")
    token = await csrf(client, "/trader/new")
    r = await client.post(
        "/trader/new",
        data={
            "csrf": token,
            "idem": "form-token-1",
            "direction": "import",
            "lbcp": "LMC",
            "package_count": "3",
            "package_description": "cartons",
            "article_description": "shirts",
            "consignor_name": "A",
            "consignor_address": "B",
            "consignee_name": "C",
            "consignee_address": "D",
            "expected_at": "2030-01-07T20:00",
        },
    )
    assert r.status == 503, await r.text()
    assert r.content_type == "text/html"
    assert fakes.pool.attempts >= 1


async def test_a_batch_upload_reaches_the_apis_batch_path(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 2: an uploaded CSV is read after the form's token, parsed by the API's batch
    parser and sent down the batch write path; with PostgreSQL down that answers 503, shown
    as a page (never a 500)."""
    from aiohttp import FormData
    from handler_fakes import DownPool

    fakes.pool = DownPool(operational_error)
    client = await aiohttp_client(fakes.app())
    await sign_in(client, fakes, "trader")
    token = await csrf(client, "/trader/batch")
    form = FormData()
    form.add_field("csrf", token)
    form.add_field("idem", "batch-token-1")
    csv = (
        "direction,lbcp,package_count,package_description,article_description,"
        "consignor_name,consignor_address,consignee_name,consignee_address,expected_at\n"
        "import,LMC,3,cartons,shirts,A,B,C,D,2030-01-07T20:00:00+08:00\n"
    )
    form.add_field("file", csv.encode(), filename="batch.csv", content_type="text/csv")
    r = await client.post("/trader/batch", data=form)
    assert r.status == 503, await r.text()
    assert r.content_type == "text/html"
