#!/usr/bin/env python3
"""
A stand-in for the Telegram Bot API and the Meta Graph API, for bench/run.sh only.

The gateway calls providers only while connections are created (getMe, setWebhook, Graph
GET /me), never on the webhook path that the benchmark measures, so a single-threaded
standard-library server is enough. It answers:

  POST|GET /bot<TOKEN>/getMe        {"ok":true,"result":{"id":<bot id>,"is_bot":true,...}}
  POST     /bot<TOKEN>/setWebhook   {"ok":true,"result":true}, and records "secret_token"
  POST     /bot<TOKEN>/deleteWebhook {"ok":true,"result":true}
  GET      /v21.0/<anything>        {"id":"1","name":"Bench"}

The secret the gateway chose in setWebhook is written to SECRET_FILE (one line), because the
benchmark's Telegram requests must carry it and the gateway stores it only encrypted.

Usage: fake_provider.py PORT SECRET_FILE
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    secret_file = None

    def log_message(self, fmt, *args):  # keep the benchmark output clean
        pass

    def _reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def _telegram(self, path, body):
        # /bot<id>:<secret>/<method>
        rest = path[len("/bot"):]
        token, _, method = rest.partition("/")
        bot_id = token.split(":", 1)[0]
        if not bot_id.isdigit():
            return self._reply(401, {"ok": False, "error_code": 401,
                                     "description": "Unauthorized"})
        if method == "getMe":
            return self._reply(200, {"ok": True, "result": {
                "id": int(bot_id), "is_bot": True, "first_name": "Bench",
                "username": "bench_bot"}})
        if method == "setWebhook":
            secret = body.get("secret_token", "")
            tmp = self.secret_file + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(secret + "\n")
            os.replace(tmp, self.secret_file)
            return self._reply(200, {"ok": True, "result": True})
        if method == "deleteWebhook":
            return self._reply(200, {"ok": True, "result": True})
        return self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/bot"):
            return self._telegram(path, {})
        if path.startswith("/v21.0/"):
            return self._reply(200, {"id": "1", "name": "Bench"})
        return self._reply(404, {"error": {"message": "not found", "code": 803}})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        body = self._body()
        if path.startswith("/bot"):
            return self._telegram(path, body)
        if path.startswith("/v21.0/"):
            return self._reply(200, {"success": True})
        return self._reply(404, {"error": {"message": "not found", "code": 803}})


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: fake_provider.py PORT SECRET_FILE\n")
        return 2
    Handler.secret_file = sys.argv[2]
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
