"""
docs/openapi.json: a valid-looking OpenAPI 3 document that lists every route of docs/api.md,
documents the statuses each route answers, and agrees with the real server: a set of live
probes must answer statuses the document lists for that route, with JSON bodies that match
the documented schemas.

The route list at the end of docs/api.md names every route "served" or "planned": served
routes answer (neither 404 nor 405) and are in openapi.json; planned routes answer 404 or
405 and are not in it. Serving a new route means flipping its line there and adding it to
openapi.json.
"""

import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

OPENAPI = os.path.join(H.SOURCE_DIR, "docs", "openapi.json")
API_MD = os.path.join(H.SOURCE_DIR, "docs", "api.md")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_doc():
    with open(OPENAPI, encoding="utf-8") as f:
        return json.load(f)


def resolve(doc, node):
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), "external $ref %r" % ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen += 1
        assert seen < 20, "$ref loop"
    return node


def validate(doc, schema, value, where="$"):
    """A small JSON Schema (OpenAPI 3.0 dialect) validator; returns a list of problems."""
    schema = resolve(doc, schema)
    errs = []
    if value is None and schema.get("nullable"):
        return errs
    for sub in schema.get("allOf", []):
        errs += validate(doc, sub, value, where)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            if not any(not validate(doc, s, value, where) for s in schema[key]):
                errs.append("%s: matches none of %s" % (where, key))
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t in types and not isinstance(value, types[t]):
        return errs + ["%s: expected %s, got %r" % (where, t, value)]
    if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return errs + ["%s: expected integer, got %r" % (where, value)]
    if t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return errs + ["%s: expected number, got %r" % (where, value)]
    if "enum" in schema and value not in schema["enum"]:
        errs.append("%s: %r not in %r" % (where, value, schema["enum"]))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errs.append("%s: shorter than %d" % (where, schema["minLength"]))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append("%s: longer than %d" % (where, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append("%s: %r does not match %s" % (where, value, schema["pattern"]))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append("%s: under the minimum" % where)
        if "maximum" in schema and value > schema["maximum"]:
            errs.append("%s: over the maximum" % where)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            if r not in value:
                errs.append("%s: required property %r missing" % (where, r))
        if len(value) < schema.get("minProperties", 0):
            errs.append("%s: too few properties" % where)
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += validate(doc, props[k], v, "%s.%s" % (where, k))
            elif extra is False:
                errs.append("%s: undocumented property %r" % (where, k))
            elif isinstance(extra, dict):
                errs += validate(doc, extra, v, "%s.%s" % (where, k))
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += validate(doc, schema["items"], v, "%s[%d]" % (where, i))
    return errs


def routes_in_markdown(text):
    """(METHOD, path) of every `METHOD /path` (also `GET/POST /path` and `DELETE …/x`)."""
    out = []
    prev = None
    for methods, path in re.findall(
            r"`((?:GET|POST|PUT|PATCH|DELETE)(?:/(?:GET|POST|PUT|PATCH|DELETE))*)\s+([^`\s]+)`",
            text):
        path = path.split("?")[0]
        if path.startswith("…") or path.startswith("..."):
            rest = path.lstrip(".…")
            first = rest.split("/")[1]
            path = prev[:prev.rfind("/" + first)] + rest
        prev = path
        if not re.match(r"^/(orgs/|webhooks/|healthz$|readyz$|metrics$)", path):
            continue  # a provider's API (Graph GET /me, ...), not a gateway route
        for m in methods.split("/"):
            out.append((m, path))
    return out


def norm(path):
    """The path with every {parameter} name erased, to compare templates."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def api_md():
    """(text of docs/api.md before its route list, [(METHOD, path, state)] of the list)."""
    with open(API_MD, encoding="utf-8") as f:
        text = f.read()
    head, sep, tail = text.partition("\n## Route list\n")
    assert sep, "docs/api.md has no '## Route list' section"
    rows = re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)` \| (served|planned) \|$",
                      tail, re.M)
    table_lines = [l for l in tail.splitlines() if l.startswith("| `")]
    assert len(rows) == len(table_lines), "malformed route list rows: %r" % table_lines
    return head, rows


def route_list(state=None):
    return [(m, p) for m, p, st in api_md()[1] if state is None or st == state]


class OpenApiDocumentTest(unittest.TestCase):
    """Static checks of the document."""

    @classmethod
    def setUpClass(cls):
        cls.doc = load_doc()

    def operations(self):
        for path, item in self.doc["paths"].items():
            for m in METHODS:
                if m in item:
                    yield path, m, item, item[m]

    def test_is_openapi_3(self):
        self.assertTrue(self.doc["openapi"].startswith("3."), self.doc.get("openapi"))
        self.assertEqual(self.doc["openapi"], "3.0.3")
        self.assertTrue(self.doc["info"]["title"])
        self.assertTrue(self.doc["info"]["version"])
        schemes = self.doc["components"]["securitySchemes"]
        self.assertEqual(schemes["bearerAuth"], dict(schemes["bearerAuth"], type="http",
                                                     scheme="bearer"))
        self.assertEqual(self.doc["security"], [{"bearerAuth": []}])
        for name in ("Connection", "Assistant", "Binding", "Contact", "Error"):
            self.assertIn(name, self.doc["components"]["schemas"])

    def test_every_ref_resolves(self):
        def walk(node, where):
            if isinstance(node, dict):
                if "$ref" in node:
                    try:
                        resolve(self.doc, node)
                    except (KeyError, AssertionError) as e:
                        self.fail("%s: unresolved $ref %r (%s)" % (where, node["$ref"], e))
                for k, v in node.items():
                    walk(v, where + "/" + k)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s[%d]" % (where, i))
        walk(self.doc, "#")

    def test_api_md_routes_are_documented(self):
        text, _ = api_md()
        routes = routes_in_markdown(text)
        self.assertGreaterEqual(len(routes), 17, routes)
        served = set(route_list("served"))
        for method, path in routes:
            self.assertTrue(path in self.doc["paths"], "%s %s missing" % (method, path))
            self.assertTrue(method.lower() in self.doc["paths"][path],
                            "%s %s missing" % (method, path))
            self.assertIn((method, path), served, "%s %s is not in the route list" % (method, path))
        # paths named without a method (the webhook endpoints): GET handshake and POST
        paths = {norm(p): item for p, item in self.doc["paths"].items()}
        hooks = re.findall(r"`(/webhooks/[^`]+)`", text)
        self.assertTrue(hooks)
        for path in hooks:
            self.assertTrue(norm(path) in paths, path)
            self.assertTrue("get" in paths[norm(path)], path)
            self.assertTrue("post" in paths[norm(path)], path)

    def test_route_list(self):
        rows = route_list()
        self.assertEqual(len(rows), len(set(rows)), "a route listed twice")
        self.assertGreaterEqual(len(route_list("served")), 23)
        self.assertGreaterEqual(len(rows), 43)
        ops = {(m.upper(), norm(p)) for p, m, _, _ in self.operations()}
        for method, path in route_list("served"):
            self.assertIn((method, norm(path)), ops, "served %s %s is not in openapi.json"
                          % (method, path))
        for method, path in route_list("planned"):
            self.assertNotIn((method, norm(path)), ops, "planned %s %s is in openapi.json; "
                             "flip it to served in docs/api.md" % (method, path))
        listed = {(m, norm(p)) for m, p in rows}
        for op in ops:
            self.assertIn(op, listed, "%s %s is in openapi.json but not in the route list" % op)

    def test_no_undocumented_org_routes(self):
        documented = {(m.lower(), norm(p)) for m, p in route_list("served")}
        for path, m, _, _ in self.operations():
            self.assertIn((m, norm(path)), documented, "%s %s is in no route table" % (m, path))

    def test_operations_are_complete(self):
        ids = set()
        for path, m, item, op in self.operations():
            where = "%s %s" % (m.upper(), path)
            self.assertIn("operationId", op, where)
            self.assertNotIn(op["operationId"], ids, where)
            ids.add(op["operationId"])
            codes = set(op["responses"])
            self.assertTrue(codes, where)
            for c in codes:
                self.assertRegex(c, r"^[1-5][0-9][0-9]$", where)
            # path parameters are declared
            declared = {resolve(self.doc, p)["name"] for p in item.get("parameters", []) +
                        op.get("parameters", []) if resolve(self.doc, p)["in"] == "path"}
            self.assertEqual(declared, set(re.findall(r"\{([^}]+)\}", path)), where)
            for p in item.get("parameters", []) + op.get("parameters", []):
                p = resolve(self.doc, p)
                if p["in"] == "path":
                    self.assertIs(p.get("required"), True, where)
            if path.startswith("/orgs/"):
                self.assertNotIn("security", op, "%s must use the global bearer auth" % where)
                self.assertLessEqual({"401", "429", "503"}, codes, where)
                if "{" in path:
                    self.assertIn("404", codes, where)
                if "requestBody" in op:
                    self.assertLessEqual({"400", "413"}, codes, where)
                for c in codes - {"204", "202"}:
                    resp = resolve(self.doc, op["responses"][c])
                    if c.startswith("4") or c.startswith("5"):
                        schema = resp["content"]["application/json"]["schema"]
                        self.assertEqual(schema, {"$ref": "#/components/schemas/Error"}, where)
                    if c == "429":
                        self.assertIn("Retry-After", resp.get("headers", {}), where)
            else:
                self.assertEqual(op.get("security"), [], "%s needs no key" % where)

    def test_lists_have_pagination(self):
        for path, m, item, op in self.operations():
            if m != "get" or not path.startswith("/orgs/"):
                continue
            ok = resolve(self.doc, op["responses"]["200"])
            content = ok.get("content", {}).get("application/json")
            if not content or resolve(self.doc, content["schema"]).get("type") != "array":
                continue
            names = {resolve(self.doc, p)["name"] for p in op.get("parameters", [])}
            self.assertLessEqual({"page", "take"}, names, path)
            self.assertLessEqual({"pagination-count", "pagination-page", "pagination-take"},
                                 set(ok.get("headers", {})), path)
            self.assertIn("400", op["responses"], path)
        take = resolve(self.doc, {"$ref": "#/components/parameters/Take"})["schema"]
        self.assertEqual((take["minimum"], take["maximum"], take["default"]), (1, 100, 20))
        page = resolve(self.doc, {"$ref": "#/components/parameters/Page"})["schema"]
        self.assertEqual((page["minimum"], page["default"]), (1, 1))

    def test_statuses_per_route(self):
        expected = {
            ("get", "/orgs/c/connections"): {"200", "400", "401", "429", "503"},
            ("post", "/orgs/c/connections"): {"201", "400", "401", "413", "429", "502", "503"},
            ("get", "/orgs/c/connections/{id}"): {"200", "401", "404"},
            ("patch", "/orgs/c/connections/{id}"): {"200", "400", "401", "404", "413", "502"},
            ("delete", "/orgs/c/connections/{id}"): {"204", "401", "404"},
            ("post", "/orgs/c/connections/{id}/test"): {"200", "401", "404", "502"},
            ("get", "/orgs/c/assistants"): {"200", "400", "401"},
            ("post", "/orgs/c/assistants"): {"201", "400", "401", "413", "429"},
            ("get", "/orgs/c/assistants/{id}"): {"200", "401", "404"},
            ("patch", "/orgs/c/assistants/{id}"): {"200", "400", "401", "404"},
            ("delete", "/orgs/c/assistants/{id}"): {"204", "401", "404"},
            ("get", "/orgs/c/assistants/{id}/channels"): {"200", "400", "401", "404"},
            ("post", "/orgs/c/assistants/{id}/channels"): {"201", "400", "401", "404", "409"},
            ("delete", "/orgs/c/assistants/{id}/channels/{binding_id}"): {"204", "401", "404"},
            ("get", "/orgs/c/contacts"): {"200", "400", "401"},
            ("get", "/orgs/c/contacts/{id}"): {"200", "401", "404"},
            ("patch", "/orgs/c/contacts/{id}"): {"200", "400", "401", "404"},
            ("post", "/orgs/c/conversations/{id}/messages"): {"202", "400", "401", "404"},
            ("get", "/healthz"): {"200"},
            ("get", "/readyz"): {"200", "503"},
            ("get", "/metrics"): {"200"},
            ("get", "/webhooks/{channel}/{connection_id}"): {"200", "403", "404"},
            ("post", "/webhooks/{channel}/{connection_id}"): {"200", "400", "401", "404", "413",
                                                              "503"},
        }
        for (m, path), codes in expected.items():
            op = self.doc["paths"][path][m]
            self.assertLessEqual(codes, set(op["responses"]), "%s %s" % (m, path))
        # success statuses are exactly the documented ones (create 201, delete 204)
        for (m, path), codes in expected.items():
            ok = {c for c in self.doc["paths"][path][m]["responses"] if c.startswith("2")}
            self.assertEqual(ok, {c for c in codes if c.startswith("2")}, "%s %s" % (m, path))
        err = self.doc["components"]["schemas"]["Error"]
        self.assertEqual(err["required"], ["error"])
        self.assertEqual(set(err["properties"]["error"]["required"]), {"code", "message"})

    def test_validator_catches_bad_objects(self):
        conn = {"id": "cn_abc", "provider": "telegram", "kind": "channel", "name": "n",
                "status": "active",
                "account_hint": "@b", "created_at": "2026-11-22T03:04:05.123Z",
                "updated_at": "2026-11-22T03:04:05.123Z",
                "webhook_url": "http://x/webhooks/telegram/cn_abc",
                "credentials": {"bot_token": "****wxyz"}}
        ref = {"$ref": "#/components/schemas/Connection"}
        self.assertEqual(validate(self.doc, ref, conn), [])
        self.assertTrue(validate(self.doc, ref, dict(conn, credentials={"bot_token": "123:abc"})))
        self.assertTrue(validate(self.doc, ref, dict(conn, status="on")))
        self.assertTrue(validate(self.doc, ref, dict(conn, created_at="2026-11-22 03:04:05")))
        bad = dict(conn)
        del bad["webhook_url"]
        self.assertTrue(validate(self.doc, ref, bad))
        action = dict(bad, provider="api_key", kind="action",
                      credentials={"base_url": "****m/v1", "api_key": "****wxyz"})
        self.assertEqual(validate(self.doc, ref, action), [])
        self.assertTrue(validate(self.doc, ref, dict(action, kind="other")))
        self.assertTrue(validate(self.doc, ref, dict(action, credentials={"headers": {"X": "k"}})))


class OpenApiProbeTest(H.GatewayTestCase):
    """The live server answers only documented statuses, with documented bodies."""
    PREFIX = "toa:"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.doc = load_doc()

    def check(self, resp, template, method=None):
        method = (method or resp.method).lower()
        self.seen.append(resp.status)
        item = self.doc["paths"].get(template)
        self.assertTrue(item is not None, "%s is not in openapi.json" % template)
        op = item.get(method)
        self.assertTrue(op is not None, "%s %s is not in openapi.json" % (method, template))
        code = str(resp.status)
        self.assertTrue(code in op["responses"], "%s %s answered %s, not documented: %r"
                        % (method.upper(), resp.path, code, resp.body[:300]))
        r = resolve(self.doc, op["responses"][code])
        content = r.get("content", {})
        if "application/json" in content:
            self.assertIsNotNone(resp.json, "%s %s: documented JSON, got %r"
                                 % (method.upper(), resp.path, resp.body[:300]))
            problems = validate(self.doc, content["application/json"]["schema"], resp.json)
            self.assertEqual(problems, [], "%s %s -> %s" % (method.upper(), resp.path, code))
        for h in r.get("headers", {}):
            self.assertIn(h.lower(), resp.headers, "%s %s: header %s documented, not sent"
                          % (method.upper(), resp.path, h))
        if not content and code == "204":
            self.assertEqual(resp.body, b"")
        return resp

    def setUp(self):
        super().setUp()
        self.seen = []

    def test_probes(self):
        A = "/orgs/c/assistants"
        C = "/orgs/c/connections"
        chk = self.check
        chk(self.api("GET", A, key=None), A)
        chk(self.api("GET", A, key="not-a-key"), A)
        chk(self.api("GET", A), A)
        chk(self.api("GET", A + "?take=0"), A)
        chk(self.api("POST", A, {}), A)
        chk(self.api("POST", A, '{"name": "x"' + " " * 1100000 + "}"), A)
        a = chk(self.api("POST", A, {"name": "probe"}), A).json
        chk(self.api("GET", A + "/" + a["id"]), A + "/{id}")
        chk(self.api("GET", A + "/as_nope"), A + "/{id}")
        chk(self.api("PATCH", A + "/" + a["id"], {"enabled": False}), A + "/{id}")
        chk(self.api("PATCH", A + "/" + a["id"], {}), A + "/{id}")

        fx = H.load_fixture("telegram", "text_private")
        tok = H.fixture_token(fx)
        self.telegram.add_bot(tok, username="probe_bot")
        chk(self.api("GET", C + "?provider=sms"), C)
        chk(self.api("POST", C, {"provider": "telegram",
                                 "credentials": {"bot_token": "6999999999:refused-token-x"}}), C)
        conn = chk(self.api("POST", C, {"provider": "telegram",
                                        "credentials": {"bot_token": tok}}), C).json
        tok5 = "6999999998:probe-5xx-token-abcdef"
        self.telegram.add_bot(tok5)
        self.telegram.override("getme", status=500, body={"ok": False}, times=1)
        chk(self.api("POST", C, {"provider": "telegram", "credentials": {"bot_token": tok5}}), C)
        chk(self.api("GET", C), C)
        cp = C + "/" + conn["id"]
        chk(self.api("GET", cp), C + "/{id}")
        chk(self.api("GET", C + "/cn_nope"), C + "/{id}")
        chk(self.api("PATCH", cp, {"name": "renamed"}), C + "/{id}")
        chk(self.api("PATCH", cp, {"name": ""}), C + "/{id}")
        chk(self.api("POST", cp + "/test"), C + "/{id}/test")
        chk(self.api("POST", C + "/cn_nope/test"), C + "/{id}/test")

        B = A + "/" + a["id"] + "/channels"
        b = chk(self.api("POST", B, {"connection_id": conn["id"]}), A + "/{id}/channels").json
        chk(self.api("POST", B, {"connection_id": conn["id"]}), A + "/{id}/channels")
        chk(self.api("POST", B, {"connection_id": "cn_nope"}), A + "/{id}/channels")
        chk(self.api("GET", B), A + "/{id}/channels")
        chk(self.api("GET", A + "/as_nope/channels"), A + "/{id}/channels")

        # webhooks
        W = "/webhooks/{channel}/{connection_id}"
        hook = urllib.parse.urlsplit(conn["webhook_url"]).path
        secret = self.telegram.last_secret(tok)
        hdrs = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret}
        chk(self.gw.http("POST", hook, body=json.dumps(fx["body"]), headers=hdrs), W)
        chk(self.gw.http("POST", hook, body=json.dumps(fx["body"]),
                         headers={"Content-Type": "application/json"}), W)
        chk(self.gw.http("POST", hook, body="[1, 2", headers=hdrs), W)
        big = '{"update_id": 1, "message": {"text": "' + "x" * (4 * 1024 * 1024) + '"}}'
        self.assertEqual(chk(self.gw.http("POST", hook, body=big, headers=hdrs), W).status, 413)
        chk(self.gw.http("POST", "/webhooks/telegram/cn_nope", body=json.dumps(fx["body"]),
                         headers=hdrs), W)

        wa_fx = H.load_fixture("whatsapp", "text")
        acc = "EAAProbe" + "x" * 30
        self.graph.add_account(acc, "1", "Probe WA")
        wa = chk(self.api("POST", C, {"provider": "whatsapp", "credentials": {
            "app_secret": "probe-app-secret-123", "verify_token": "probe-verify-123",
            "access_token": acc}}), C).json
        whook = urllib.parse.urlsplit(wa["webhook_url"]).path
        for vt in ("probe-verify-123", "wrong"):
            q = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.verify_token": vt,
                                        "hub.challenge": "42"})
            chk(self.gw.http("GET", whook + "?" + q), W)
        chk(self.gw.http("GET", "/webhooks/whatsapp/cn_nope?hub.mode=subscribe&"
                                "hub.verify_token=x&hub.challenge=1"), W)
        raw = json.dumps(wa_fx["body"], separators=(",", ":")).encode()
        sig = "sha256=" + hmac.new(b"probe-app-secret-123", raw, hashlib.sha256).hexdigest()
        chk(self.gw.http("POST", whook, body=raw, headers={"Content-Type": "application/json",
                                                           "X-Hub-Signature-256": sig}), W)
        chk(self.gw.http("POST", whook, body=raw, headers={"Content-Type": "application/json",
                                                           "X-Hub-Signature-256": "sha256=00"}), W)

        # contacts (the Telegram update above created one)
        ct = H.wait_until(lambda: self.api("GET", "/orgs/c/contacts").json, 10, "a contact")[0]
        chk(self.api("GET", "/orgs/c/contacts"), "/orgs/c/contacts")
        chk(self.api("GET", "/orgs/c/contacts?status=FOO"), "/orgs/c/contacts")
        chk(self.api("GET", "/orgs/c/contacts/" + ct["id"]), "/orgs/c/contacts/{id}")
        chk(self.api("GET", "/orgs/c/contacts/ct_nope"), "/orgs/c/contacts/{id}")
        chk(self.api("PATCH", "/orgs/c/contacts/" + ct["id"], {"status": "BLOCKED"}),
            "/orgs/c/contacts/{id}")
        chk(self.api("PATCH", "/orgs/c/contacts/" + ct["id"], {"status": "ALL"}),
            "/orgs/c/contacts/{id}")

        # inbox routes of the contract: at least their authentication is as documented
        chk(self.api("POST", "/orgs/c/conversations/cv_nope/messages",
                     {"id": "c1", "type": "text", "text": "hi"}, key=None),
            "/orgs/c/conversations/{id}/messages")

        # deletes
        chk(self.api("DELETE", B + "/" + b["id"]), A + "/{id}/channels/{binding_id}")
        chk(self.api("DELETE", B + "/" + b["id"]), A + "/{id}/channels/{binding_id}")
        chk(self.api("DELETE", cp), C + "/{id}")
        chk(self.api("DELETE", cp), C + "/{id}")
        chk(self.api("DELETE", A + "/" + a["id"]), A + "/{id}")
        chk(self.api("DELETE", A + "/" + a["id"]), A + "/{id}")

        # operations
        for p in ("/healthz", "/readyz", "/metrics"):
            r = chk(self.gw.http("GET", p), p)
            self.assertEqual(r.status, 200)

        # and each probe answered what docs/api.md says
        self.assertEqual(self.seen, [
            401, 401, 200, 400, 400, 413, 201, 200, 404, 200, 400,   # assistants
            400, 400, 201, 502, 200, 200, 404, 200, 400, 200, 404,   # connections
            201, 409, 400, 200, 404,                                 # bindings
            200, 401, 400, 413, 404,                                 # telegram webhook
            201, 200, 403, 404, 200, 401,                            # whatsapp webhook
            200, 400, 200, 404, 200, 400,                            # contacts
            401,                                                     # conversations
            204, 404, 204, 404, 204, 404,                            # deletes
            200, 200, 200])

    def test_405_is_documented_with_allow(self):
        r = self.api("PUT", "/orgs/c/assistants", {"name": "x"})
        self.assertEqual(r.status, 405, r)
        resp = resolve(self.doc, {"$ref": "#/components/responses/MethodNotAllowed"})
        self.assertIn("Allow", resp["headers"])
        self.assertEqual(validate(self.doc, resp["content"]["application/json"]["schema"], r.json),
                         [])
        self.assertIn("allow", r.headers)

    def test_429_body_and_headers_as_documented(self):
        org = self.new_org()
        key = self.gw.keys_create(org)
        for i in range(10):
            self.assertEqual(self.gw.http("POST", "/orgs/c/assistants", {"name": "n%d" % i},
                                          key=key).status, 201)
        r = self.gw.http("POST", "/orgs/c/assistants", {"name": "x"}, key=key)
        self.check(r, "/orgs/c/assistants")
        self.assertEqual(r.status, 429)


class ServedDocumentTest(H.GatewayTestCase):
    """GET /openapi.json serves docs/openapi.json byte for byte, without a key."""
    PREFIX = "tos:"
    check = OpenApiProbeTest.check

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.doc = load_doc()

    def setUp(self):
        super().setUp()
        self.seen = []

    def test_served_document_is_the_file(self):
        with open(OPENAPI, "rb") as f:
            raw = f.read()
        r = self.check(self.api("GET", "/openapi.json", key=None), "/openapi.json")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("content-type"), "application/json")
        self.assertEqual(r.body, raw, "the served document differs from docs/openapi.json")
        self.assertEqual(r.json, self.doc)
        self.assertEqual(r.headers.get("cache-control"), "no-cache")
        etag = r.headers.get("etag")
        self.assertRegex(etag or "", r'^"[0-9a-f]{20}"$')
        self.assertEqual(etag[1:-1], hashlib.sha256(raw).hexdigest()[:20])
        # a key does not change it
        self.assertEqual(self.api("GET", "/openapi.json").body, raw)

    def test_revalidation_and_methods(self):
        etag = self.api("GET", "/openapi.json", key=None).headers["etag"]
        r = self.check(self.api("GET", "/openapi.json", key=None,
                                headers={"If-None-Match": 'W/"x", ' + etag}), "/openapi.json")
        self.assertEqual((r.status, r.body), (304, b""), r)
        self.assertEqual(r.headers.get("etag"), etag)
        r = self.api("GET", "/openapi.json", key=None, headers={"If-None-Match": '"0000"'})
        self.assertEqual(r.status, 200, r)
        r = self.check(self.api("POST", "/openapi.json", {}, key=None), "/openapi.json", "get")
        self.assertStatus(r, 405)
        self.assertEqual(r.headers.get("allow"), "GET")
        self.assertIn(b'switchboard_http_requests_total{route="/openapi.json",status="200"}',
                      self.api("GET", "/metrics", key=None).body)


class RouteListProbeTest(H.GatewayTestCase):
    """The live server serves exactly the served routes of docs/api.md's route list."""
    PREFIX = "torl:"

    def ids(self):
        """Real objects for every path parameter (the served routes then never 404)."""
        a = self.create_assistant("route list")
        tok = "6111111111:route-list-token-abcdef"
        self.telegram.add_bot(tok, username="routes_bot")
        conn = self.create_telegram(tok)
        b = self.bind(a["id"], conn["id"])
        fx = H.load_fixture("telegram", "text_private")
        body = json.loads(json.dumps(fx["body"]))
        self.assertEqual(self.post_telegram_update(conn, tok, body).status, 200)
        ct = H.wait_until(lambda: self.api("GET", "/orgs/c/contacts").json, 10, "a contact")[0]
        ev = H.wait_until(lambda: self.redis.command("XRANGE", "torl:in:{%s}" % a["id"], "-", "+"),
                          10, "the event")[0]
        conv = json.loads(dict(zip(ev[1][::2], ev[1][1::2]))[b"event"])["conversation_id"]
        wa = self.create_meta("whatsapp", "route-list-app-secret", "route-list-verify",
                              "EAARouteList" + "x" * 30)
        return {"connections": conn["id"], "assistants": a["id"], "channels": b["id"],
                "contacts": ct["id"], "conversations": conv, "channel": "whatsapp",
                "connection_id": wa["id"]}

    @staticmethod
    def fill(path, ids):
        parts = path.split("/")
        for i, part in enumerate(parts):
            m = re.match(r"^\{(.+)\}$", part)
            if m:
                name = m.group(1)
                parts[i] = ids.get(name) or ids.get(parts[i - 1]) or "x_%s_1" % name
        return "/".join(parts)

    def served(self, method, url):
        """
        Whether the gateway serves 'method' on 'url': any answer but 404/405; or, where the
        object named in the path does not exist (404), a 405 to PUT (a method no route
        takes) whose Allow names 'method', which only a served path answers.
        """
        if method == "GET" and url.endswith("/inbox/events"):
            # a stream that never ends: its status line and headers are the answer
            conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=10)
            try:
                conn.request("GET", url, headers={"Authorization": "Bearer " + self.key})
                r = conn.getresponse()
                return r.status not in (404, 405), r
            finally:
                conn.close()
        body = None if method in ("GET", "DELETE") else {}
        r = self.api(method, url, body)
        if r.status not in (404, 405):
            return True, r
        if r.status == 404:
            probe = self.api("PUT", url, {})
            allow = [m.strip() for m in probe.headers.get("allow", "").split(",")]
            if probe.status == 405 and method in allow:
                return True, r
        return False, r

    def test_served_routes_answer_and_planned_ones_do_not(self):
        ids = self.ids()
        served = route_list("served")
        # deletes last, the binding before the objects it joins
        order = sorted(served, key=lambda r: (r[0] == "DELETE", "channels" not in r[1]))
        for method, path in order:
            url = self.fill(path, ids)
            ok, r = self.served(method, url)
            with self.subTest(route="%s %s" % (method, path)):
                self.assertTrue(ok, "served %s %s answered %r" % (method, url, r))
        for method, path in route_list("planned"):
            url = self.fill(path, ids)
            ok, r = self.served(method, url)
            with self.subTest(route="%s %s" % (method, path)):
                self.assertFalse(ok, "planned %s %s answers %d: flip it to served in "
                                 "docs/api.md" % (method, url, r.status))


if __name__ == "__main__":
    H.main()
