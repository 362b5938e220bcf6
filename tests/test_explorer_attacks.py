"""The explorer attacked as another web site would: forged requests (cross-site forms,
text/plain bodies, foreign Origin or Host, no token, huge or hostile bodies) must be
refused with nothing changed in memory or on disk; the same payload sent properly
must still work (so each refusal is the check's doing, not a bad payload)."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading

import httpx
import pytest
from starlette.testclient import TestClient

from sparsecbm.access import MAX_BODY, allowed_hosts, host_name
from sparsecbm.cli import main
from sparsecbm.explorer import create_app

from .conftest import copy_masks, make_explorer, same_masks
from .explorer_support import LOCAL, chromium_path, fixable, folder_digest

JSON = {"Content-Type": "application/json"}
FORGED = {
    "text/plain body (a cross-site form or fetch)": ({"Content-Type": "text/plain"}, 415),
    "form-encoded body": ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    "multipart body": ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
    "no Content-Type": ({}, 415),
    "foreign Origin": ({**JSON, "Origin": "http://evil.example"}, 403),
    "another local port's Origin": ({**JSON, "Origin": "http://127.0.0.1:9999"}, 403),
    "null Origin (sandboxed frame)": ({**JSON, "Origin": "null"}, 403),
    "cross-site fetch metadata": ({**JSON, "Sec-Fetch-Site": "cross-site"}, 403),
    "foreign Host (DNS rebinding)": ({**JSON, "Host": "evil.example:8765"}, 403),
}


def _post(c, path: str, body: dict, headers: dict):
    return c.post(path, content=json.dumps(body).encode(), headers=headers)


@pytest.mark.parametrize("kind", list(FORGED))
def test_forged_requests_change_nothing_in_memory_or_on_disk(client, model_dir, kind):
    headers, status = FORGED[kind]
    index, concept, value, _ = fixable(client)
    masks, disk = copy_masks(client.explorer.clf), folder_digest(model_dir)
    keep = {"index": index, "concept": concept, "value": value, "version": 0}
    for path, body in (("/api/keep", keep), ("/api/save", {"version": 0}), ("/api/undo", {"version": 0}),
                       ("/api/reload", {"version": 0})):
        r = _post(client, path, body, headers)
        assert r.status_code == status and "error" in r.json(), (path, r.status_code, r.text)
    assert same_masks(masks, client.explorer.clf.model.masks) and client.explorer.clf.interventions == []
    assert client.explorer.version == 0 and folder_digest(model_dir) == disk
    # The same payload from the explorer's own page is accepted: the refusal was the check's doing.
    page = {**JSON, "Origin": LOCAL}
    assert _post(client, "/api/keep", keep, page).json()["result"]["persisted"]
    assert _post(client, "/api/save", {"version": 1}, page).status_code == 200 and folder_digest(model_dir) != disk


def test_foreign_host_cannot_read_either(client):
    for path in ("/", "/api/model", "/api/history", "/static/app.js"):
        r = client.get(path, headers={"Host": "evil.example"})
        assert r.status_code == 403 and "DNS-rebinding" in r.json()["error"], path
        assert client.get(path, headers={"Host": "localhost:8765"}).status_code == 200  # loopback names are fine
    r = client.get("/api/history", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_bodies_are_bounded_and_every_error_is_json(client):
    big = b'{"text": "' + b"x" * MAX_BODY + b'"}'
    r = client.post("/api/explain", content=big, headers=JSON)
    assert r.status_code == 413 and f"over {MAX_BODY} bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b"x" * 4096

    r = client.post("/api/explain", content=chunks(), headers=JSON)
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    nested = b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = client.post("/api/explain", content=nested, headers=JSON)
    assert r.status_code == 400 and "nests too deeply" in r.json()["error"]
    r = client.post("/api/explain", content=b'{"text": "caf\\ud800 food"}', headers=JSON)
    assert r.status_code == 400 and "character 4 is not a valid Unicode character" in r.json()["error"]
    r = client.post("/api/explain", content=b'{"text": "\xff"}', headers=JSON)
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]
    for method, path in (("GET", "/api/nothing"), ("GET", "/api/keep"), ("DELETE", "/api/model")):
        r = client.request(method, path, headers=JSON)
        assert r.status_code in (404, 405) and path in r.json()["error"], (method, path)
    headers = client.get("/").headers
    assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_token_is_required_on_every_request_when_set(model_dir, reviews):
    explorer = make_explorer(model_dir, reviews)
    token = "s3cret-token"
    with TestClient(create_app(explorer, host="0.0.0.0", token=token), base_url="http://192.0.2.7:8765") as c:
        for path in ("/", "/static/app.js", "/api/model"):
            r = c.get(path)
            assert r.status_code == 403 and "needs its token" in r.json()["error"], path
        assert c.get("/api/model", headers={"X-Sparsecbm-Token": "wrong"}).status_code == 403
        assert _post(c, "/api/undo", {"version": 0}, {**JSON, "Cookie": "sparsecbm_token=wrong"}).status_code == 403
        assert c.post(f"/api/undo?token={token}", json={"version": 0}).status_code == 403  # not in a POST's URL
        assert explorer.clf.interventions == [] and explorer.version == 0
        # The printed URL: the token moves into a SameSite=Strict cookie and out of the address bar.
        r = c.get(f"/?token={token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        # The cookie is named after the port: explorers on two ports of one host do not overwrite each other's.
        assert f"sparsecbm_token_8765={token}" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        assert c.get("/").status_code == 200 and c.get("/api/model").status_code == 200  # the cookie now
    with TestClient(create_app(explorer, host="0.0.0.0", token=token), base_url="http://192.0.2.7:8765") as c:
        assert c.get("/api/model", headers={"X-Sparsecbm-Token": token}).status_code == 200
        assert c.get("/api/model", headers={"Authorization": f"token {token}"}).status_code == 200
        assert c.post("/api/undo", json={"version": 0}, headers={"X-Sparsecbm-Token": token}).status_code == 400


@pytest.mark.parametrize("other", [
    'prefs={"theme":"dark"}', "a=b c", "x=back\\slash", 'q="unterminated', "sparsecbm_token_8765=wrong", "=;;",
])
def test_another_apps_cookie_cannot_lock_the_user_out(model_dir, reviews, other):
    """Cookies are shared by every port of a host: one that the standard library's parser rejects
    (quotes, spaces, backslashes), or a wrong token under our name, must not hide the real token."""
    explorer = make_explorer(model_dir, reviews)
    token = "s3cret-token"
    with TestClient(create_app(explorer, host="0.0.0.0", token=token), base_url="http://192.0.2.7:8765") as c:
        for cookies in (f"{other}; sparsecbm_token_8765={token}", f"sparsecbm_token_8765={token}; {other}"):
            assert c.get("/api/model", headers={"Cookie": cookies}).status_code == 200, cookies


@pytest.mark.parametrize("path, location", [
    ("//evil.example", "/evil.example"), ("/\\evil.example", "/evil.example"), ("///evil.example/x", "/evil.example/x"),
    ("/static/app.js", "/static/app.js"), ("/a b", "/a%20b"),
])
def test_the_token_redirect_stays_on_this_server(model_dir, reviews, path, location):
    explorer = make_explorer(model_dir, reviews)
    token = "s3cret-token"
    app = create_app(explorer, host="0.0.0.0", token=token)
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": f"token={token}".encode(), "headers": [(b"host", b"192.0.2.7:8765")],
             "server": ("192.0.2.7", 8765), "scheme": "http"}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 303 and dict(sent[0]["headers"])[b"location"] == location.encode()


def test_a_browser_without_the_token_gets_a_page_that_says_what_to_do(model_dir, reviews):
    explorer = make_explorer(model_dir, reviews)
    with TestClient(create_app(explorer, host="0.0.0.0", token="t0ken"), base_url="http://192.0.2.7:8765") as c:
        page = c.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
        assert "?token=" in page.text and "needs its token" in page.text
        api = c.get("/api/model", headers={"Accept": "text/html"})  # the API always answers JSON
        assert api.status_code == 403 and "needs its token" in api.json()["error"]


def test_allowed_hosts():
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("::1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("192.0.2.7") == {"192.0.2.7"} and allowed_hosts("0.0.0.0") is None
    assert [host_name(h) for h in ("a.example:80", "[::1]:8765", "LOCALHOST", "::1")] == ["a.example", "::1",
                                                                                           "localhost", "::1"]


@pytest.mark.parametrize("host, needs_token", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_prints_a_token_url_off_loopback(model_dir, reviews, monkeypatch, capsys, host, needs_token):
    import sparsecbm.explorer

    seen = {}
    monkeypatch.setattr(sparsecbm.explorer, "serve", lambda explorer, host, port, token: seen.update(token=token))
    data = ["--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--text-column", "text",
            "--label-column", "stars", "--concept-columns", "food,service,price"]
    assert main(["-q", "serve", str(model_dir), *data, "--host", host, "--port", "8799"]) == 0
    out = capsys.readouterr()
    if needs_token:
        assert seen["token"] and len(seen["token"]) >= 24 and f":8799/?token={seen['token']}" in out.out
        assert "has the URL below" in out.err
    else:
        assert seen["token"] is None and "http://127.0.0.1:8799/ " in out.out


ATTACK_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="{target}" enctype="text/plain">
<input name='{payload_head}' value='{payload_tail}'></form>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{body}'}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""


def test_real_browser_cross_site_form_cannot_edit_or_save(server, model_dir, tmp_path):
    """A page from another local origin (another port) posts a text/plain form and a
    no-cors fetch whose body is valid JSON to /api/keep and then /api/save."""
    from playwright.sync_api import sync_playwright

    explorer, base = server
    with httpx.Client(base_url=base, timeout=120) as api:
        index, concept, value, _ = fixable(api)
    disk = folder_digest(model_dir)
    attacks = {"keep": {"index": index, "concept": concept, "value": value, "version": 0}, "save": {"version": 0}}
    site = tmp_path / "evil"
    site.mkdir()
    for name, body in attacks.items():
        text = json.dumps(body)
        # A text/plain form sends 'name=value': split the JSON so that the '=' lands inside a string.
        head, tail = text[:-1] + ', "pad": "', '"}'
        (site / f"{name}.html").write_text(ATTACK_PAGE.format(target=f"{base}/api/{name}", payload_head=head,
                                                              payload_tail=tail, body=text), encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    statuses = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
            page = browser.new_page()
            page.on("response", lambda r: statuses.append((r.url, r.status)) if "/api/" in r.url else None)
            for name in attacks:
                with page.expect_navigation(url=f"{base}/api/{name}"):
                    page.goto(f"http://127.0.0.1:{evil.server_port}/{name}.html")
            browser.close()
    finally:
        evil.shutdown()
    posted = [s for url, s in statuses]
    assert len(posted) >= 2 and all(s in (403, 415) for s in posted), statuses  # every forged request refused
    assert explorer.clf.interventions == [] and explorer.version == 0 and folder_digest(model_dir) == disk
    # The keep payload itself is valid: the explorer's own page may send it.
    ok = httpx.post(f"{base}/api/keep", json=attacks["keep"], headers={"Origin": base}, timeout=120)
    assert ok.status_code == 200 and ok.json()["result"]["persisted"]
