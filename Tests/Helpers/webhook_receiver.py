#!/usr/bin/env python3
"""A webhook receiver for the alerting tests: records every POST (headers and body) as one JSON
line in LOG, answers 500 to the first FAIL_FIRST requests and 200 after, and checks nothing
itself (the test verifies signatures from what it recorded).

    webhook_receiver.py PORT LOG [FAIL_FIRST]
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log = int(sys.argv[1]), sys.argv[2]
fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        seen["n"] += 1
        status = 500 if seen["n"] <= fail_first else 200
        with open(log, "a") as f:
            f.write(json.dumps({"n": seen["n"], "status": status, "path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode("utf-8", "replace")}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
