#!/usr/bin/env python3
"""A fake of Google Compute Engine for the gce-spot plugin's tests (Python standard library only).

It speaks, as Google documents them, the parts of three services the plugin uses, on one
loopback port:

  * the metadata server: GET /computeMetadata/v1/... with `Metadata-Flavor: Google` (403
    without it); answers carry `Metadata-Flavor: Google` and an `ETag`; `?wait_for_change=true`
    long-polls until the value changes (or `timeout_sec`), `last_etag` answers at once when the
    value's ETag differs already; instance/service-accounts/default/token hands out tokens;
  * the OAuth 2.0 token endpoint (POST /token): the JWT bearer grant of a service-account key,
    whose RS256 signature is checked with `openssl` against the public key the test made, and
    whose iss, aud, scope, iat and exp are checked as Google does;
  * the Compute Engine API (under /compute/v1): instances.get, instances.start, instances.stop,
    zoneOperations.get and zoneOperations.list (with a `filter` of `(field = "value")` terms),
    Operation JSON with status PENDING -> RUNNING -> DONE and error.errors[{code, message}].
    Every call needs a bearer token this fake issued.

The "VMs" are REAL Incus containers: an instance's status is read from Incus every time,
instances.start runs `incus start NAME`, instances.stop `incus stop NAME`, and a preemption
`incus stop --force NAME`. Programs run with argv lists, never a shell.

A second loopback port, whose number only the test learns (from --ready-file), controls the fake:
  POST /_fake/preempt      {"instance": NAME}     preempt it (metadata preempted=TRUE for --self)
  POST /_fake/maintenance  {"value": "TERMINATE_ON_HOST_MAINTENANCE"}
  POST /_fake/fail-starts  {"count": N, "code": "QUOTA_EXCEEDED", "message": "..."}
  POST /_fake/revoke-tokens                       every access token issued so far stops working (401)
  GET  /_fake/state        counters, long-poll waiters, operations, metadata

  fake_gce.py --ready-file F --project P --zone Z --instance NAME [--instance ...] --self NAME
              [--incus-project default] [--nat-ip 203.0.113.10] [--sa-email E --sa-key-id K
              --sa-public-key PEM]

On start it writes {"api": PORT, "control": PORT, "pid": PID} to the ready file.
"""

import argparse
import base64
import datetime
import json
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
PACIFIC = datetime.timezone(datetime.timedelta(hours=-7))
GOOGLE_LINK = "https://www.googleapis.com/compute/v1"


def rfc3339(t=None):
    """Google's timestamps: RFC 3339 with milliseconds and a UTC offset (-07:00)."""
    t = time.time() if t is None else t
    return datetime.datetime.fromtimestamp(t, PACIFIC).isoformat(timespec="milliseconds")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Fake:
    def __init__(self, args):
        self.args = args
        self.cond = threading.Condition()
        self.project_number = "123456789012"
        self.metadata = {}
        self.etags = {}
        self.set_meta("instance/name", args.self)
        self.set_meta("instance/id", "7000000000000000001")
        self.set_meta("instance/zone", f"projects/{self.project_number}/zones/{args.zone}")
        self.set_meta("instance/hostname", f"{args.self}.{args.zone}.c.{args.project}.internal")
        self.set_meta("instance/preempted", "FALSE")
        self.set_meta("instance/maintenance-event", "NONE")
        self.set_meta("instance/scheduling/preemptible", "TRUE")
        self.set_meta("project/project-id", args.project)
        self.set_meta("project/numeric-project-id", self.project_number)
        self.instances = {}
        for i, name in enumerate(args.instance):
            self.instances[name] = {
                "id": str(7000000000000000001 + i),
                "created": rfc3339(),
                "transition": None,   # STAGING / STOPPING while this fake drives Incus
                "lastStart": None,
                "lastStop": None,
                "networkIP": None,
            }
        self.operations = {}
        self.tokens = {}              # token -> (expiry, how)
        self.fail_starts = {"count": 0, "code": "QUOTA_EXCEEDED", "message": ""}
        self.counters = {"metadata_tokens": 0, "jwt_tokens": 0, "jwt_refused": 0, "compute_calls": 0,
                         "compute_unauthenticated": 0, "operation_polls": 0, "metadata_forbidden": 0}
        self.waiters = {}
        self.refusals = []            # why token requests were refused (for the test's messages)
        self.api_port = 0

    # ---- metadata -------------------------------------------------------------------------

    def set_meta(self, key, value):
        """Set a metadata value; a change gets a new ETag and wakes long-polls (cond held or not)."""
        with self.cond:
            if self.metadata.get(key) == value and key in self.etags:
                return
            self.metadata[key] = value
            self.etags[key] = secrets.token_hex(8)
            self.cond.notify_all()

    # ---- Incus ----------------------------------------------------------------------------

    def incus(self, *argv, timeout=120):
        cmd = ["incus", *argv, "--project", self.args.incus_project]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def incus_state(self, name):
        """(Incus status, IPv4 of eth0) of the container, or (None, None) when Incus has none."""
        r = subprocess.run(["incus", "query", f"/1.0/instances/{name}/state?project={self.args.incus_project}"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return None, None
        state = json.loads(r.stdout)
        ip = None
        for addr in ((state.get("network") or {}).get("eth0") or {}).get("addresses") or []:
            if addr.get("family") == "inet" and addr.get("scope") == "global":
                ip = addr.get("address")
                break
        return state.get("status"), ip

    # ---- Compute resources ------------------------------------------------------------------

    def zone_link(self):
        return f"{GOOGLE_LINK}/projects/{self.args.project}/zones/{self.args.zone}"

    def instance_json(self, name):
        inst = self.instances[name]
        status, ip = self.incus_state(name)
        if status is None:
            return None
        if ip:
            inst["networkIP"] = ip
        gce = {"Running": "RUNNING", "Stopped": "TERMINATED", "Frozen": "SUSPENDED"}.get(status, "STAGING")
        if inst["transition"] and not (inst["transition"] == "STAGING" and gce == "RUNNING" and ip):
            gce = inst["transition"]
        nic = {"kind": "compute#networkInterface", "name": "nic0", "network": f"{GOOGLE_LINK}/projects/{self.args.project}/global/networks/default",
               "stackType": "IPV4_ONLY"}
        if inst["networkIP"]:
            nic["networkIP"] = inst["networkIP"]
        access = {"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT", "name": "External NAT", "networkTier": "PREMIUM"}
        if self.args.nat_ip and gce == "RUNNING":
            access["natIP"] = self.args.nat_ip   # an ephemeral external address: only while running
        nic["accessConfigs"] = [access]
        body = {
            "kind": "compute#instance",
            "id": inst["id"],
            "creationTimestamp": inst["created"],
            "name": name,
            "machineType": f"{self.zone_link()}/machineTypes/e2-standard-2",
            "status": gce,
            "zone": self.zone_link(),
            "networkInterfaces": [nic],
            "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": False, "preemptible": False,
                           "provisioningModel": "SPOT", "instanceTerminationAction": "STOP"},
            "selfLink": f"{self.zone_link()}/instances/{name}",
        }
        if inst["lastStart"]:
            body["lastStartTimestamp"] = inst["lastStart"]
        if inst["lastStop"]:
            body["lastStopTimestamp"] = inst["lastStop"]
        return body

    def new_operation(self, name, op_type, user):
        inst = self.instances[name]
        op_name = f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}-{secrets.token_hex(4)}"
        op = {
            "kind": "compute#operation",
            "id": str(int.from_bytes(secrets.token_bytes(7), "big")),
            "name": op_name,
            "zone": self.zone_link(),
            "operationType": op_type,
            "targetLink": f"{self.zone_link()}/instances/{name}",
            "targetId": inst["id"],
            "status": "PENDING",
            "user": user,
            "progress": 0,
            "insertTime": rfc3339(),
            "selfLink": f"{self.zone_link()}/operations/{op_name}",
        }
        with self.cond:
            self.operations[op_name] = op
        return op

    def update_op(self, op, **fields):
        with self.cond:
            op.update(fields)

    def finish_op(self, op, error=None):
        with self.cond:
            if error:
                op["error"] = {"errors": [error]}
                op["httpErrorStatusCode"] = 403 if error["code"] == "QUOTA_EXCEEDED" else 500
                op["httpErrorMessage"] = "FORBIDDEN" if error["code"] == "QUOTA_EXCEEDED" else "INTERNAL SERVER ERROR"
            op["status"] = "DONE"
            op["progress"] = 100
            op["endTime"] = rfc3339()

    def run_start(self, name, op):
        inst = self.instances[name]
        time.sleep(0.2)
        self.update_op(op, status="RUNNING", startTime=rfc3339(), progress=0)
        with self.cond:
            fail = self.fail_starts["count"] > 0
            if fail:
                self.fail_starts["count"] -= 1
                code, message = self.fail_starts["code"], self.fail_starts["message"]
        if fail:
            time.sleep(0.3)
            self.finish_op(op, {"code": code, "message": message})
            return
        status, _ = self.incus_state(name)
        if status == "Running":
            self.finish_op(op)
            return
        inst["transition"] = "STAGING"
        r = self.incus("start", name)
        if r.returncode != 0:
            inst["transition"] = None
            self.finish_op(op, {"code": "INTERNAL_ERROR", "message": f"incus start failed: {r.stderr.strip()}"})
            return
        # Google reports RUNNING once the guest is booting with its network; wait for the address.
        deadline = time.time() + 60
        while time.time() < deadline:
            status, ip = self.incus_state(name)
            if status == "Running" and ip:
                break
            time.sleep(0.2)
        inst["lastStart"] = rfc3339()
        inst["transition"] = None
        if name == self.args.self:
            self.set_meta("instance/preempted", "FALSE")
            self.set_meta("instance/maintenance-event", "NONE")
        self.finish_op(op)

    def run_stop(self, name, op, force):
        inst = self.instances[name]
        if op is not None:
            time.sleep(0.2)
            self.update_op(op, status="RUNNING", startTime=rfc3339())
        status, _ = self.incus_state(name)
        if status == "Stopped":
            if op is not None:
                self.finish_op(op)
            return
        inst["transition"] = "STOPPING"
        r = self.incus("stop", name, "--force") if force else self.incus("stop", name, "--timeout", "30")
        if r.returncode != 0 and not force:
            r = self.incus("stop", name, "--force")
        inst["lastStop"] = rfc3339()
        inst["transition"] = None
        if op is not None:
            self.finish_op(op, None if r.returncode == 0 else {"code": "INTERNAL_ERROR", "message": r.stderr.strip()})

    def preempt(self, name):
        """What Google does to a Spot VM it reclaims: preempted=TRUE on the metadata server, a
        compute.instances.preempted operation, then the machine stops."""
        op = self.new_operation(name, "compute.instances.preempted", "system")
        self.update_op(op, status="DONE", progress=100, startTime=op["insertTime"], endTime=op["insertTime"])
        self.instances[name]["transition"] = "STOPPING"
        if name == self.args.self:
            self.set_meta("instance/preempted", "TRUE")
        threading.Thread(target=self.run_stop, args=(name, None, True), daemon=True).start()
        return op

    # ---- tokens -------------------------------------------------------------------------------

    def issue_token(self, how):
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self.cond:
            self.tokens[token] = (time.time() + 3599, how)
            self.counters[f"{how}_tokens"] += 1
        return {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def token_valid(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        entry = self.tokens.get(header[len("Bearer "):])
        return entry is not None and entry[0] > time.time()

    def jwt_grant(self, form):
        """Google's service-account flow (RFC 7523): verify the assertion, issue a token."""
        def refuse(error, description):
            with self.cond:
                self.counters["jwt_refused"] += 1
                self.refusals.append(f"{error}: {description}")
            return 400, {"error": error, "error_description": description}

        if form.get("grant_type", [""])[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return refuse("unsupported_grant_type", "Invalid grant_type: " + form.get("grant_type", [""])[0])
        assertion = form.get("assertion", [""])[0]
        parts = assertion.split(".")
        if len(parts) != 3:
            return refuse("invalid_request", "Invalid JWT: assertion is not a JWT")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError:
            return refuse("invalid_grant", "Invalid JWT: malformed")
        if header.get("alg") != "RS256":
            return refuse("invalid_grant", "Invalid JWT: unsupported algorithm " + str(header.get("alg")))
        if not self.args.sa_email or claims.get("iss") != self.args.sa_email:
            return refuse("invalid_grant", "Invalid grant: account not found")
        if header.get("kid") not in (None, self.args.sa_key_id):
            return refuse("invalid_grant", "Invalid JWT Signature.")
        if not self.verify_rs256((parts[0] + "." + parts[1]).encode(), signature):
            return refuse("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or iat > now + 60 or exp <= now or exp - iat > 3600:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                                           "Check your iat and exp values in the JWT claim.")
        if claims.get("aud") != f"http://127.0.0.1:{self.api_port}/token":
            return refuse("invalid_grant", "Invalid JWT: audience " + str(claims.get("aud")) + " is not this token endpoint")
        scopes = str(claims.get("scope", "")).split()
        if COMPUTE_SCOPE not in scopes and CLOUD_SCOPE not in scopes:
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return 200, self.issue_token("jwt")

    def verify_rs256(self, signed, signature):
        with tempfile.TemporaryDirectory(prefix="fake-gce-jwt-") as d:
            data, sig = os.path.join(d, "data"), os.path.join(d, "sig")
            with open(data, "wb") as f:
                f.write(signed)
            with open(sig, "wb") as f:
                f.write(signature)
            r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", self.args.sa_public_key, "-signature", sig, data],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            return r.returncode == 0

    def state(self):
        with self.cond:
            return {
                "counters": dict(self.counters),
                "waiters": dict(self.waiters),
                "metadata": dict(self.metadata),
                "operations": [dict(op) for op in self.operations.values()],
                "failStarts": dict(self.fail_starts),
                "refusals": list(self.refusals),
            }


def google_error(code, message, reason, status):
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}],
                      "status": status}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-gce/1"
    fake: Fake = None

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-gce %s %s\n" % (self.address_string(), fmt % args))

    def client_gone(self):
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, code, payload, content_type="application/json; charset=UTF-8", headers=None):
        data = payload if isinstance(payload, bytes) else (json.dumps(payload) if not isinstance(payload, str) else payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class APIHandler(Handler):
    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path.startswith("/computeMetadata/v1/"):
            return self.metadata(url.path[len("/computeMetadata/v1/"):], query)
        if url.path.startswith("/compute/v1/"):
            return self.compute("GET", url.path[len("/compute/v1/"):], query)
        self.send(404, google_error(404, "Not Found", "notFound", "NOT_FOUND"))

    def do_POST(self):
        url = urlsplit(self.path)
        body = self.body()
        if url.path == "/token":
            form = parse_qs(body.decode("utf-8", "replace"))
            code, payload = self.fake.jwt_grant(form)
            return self.send(code, payload, headers={"Cache-Control": "no-store"})
        if url.path.startswith("/compute/v1/"):
            return self.compute("POST", url.path[len("/compute/v1/"):], parse_qs(url.query))
        if url.path.startswith("/computeMetadata/"):
            return self.send(405, "Method Not Allowed", "text/html")
        self.send(404, google_error(404, "Not Found", "notFound", "NOT_FOUND"))

    # ---- metadata server ------------------------------------------------------------------

    def metadata(self, key, query):
        fake = self.fake
        flavor = {"Metadata-Flavor": "Google"}
        if self.headers.get("Metadata-Flavor") != "Google" or self.headers.get("X-Forwarded-For"):
            with fake.cond:
                fake.counters["metadata_forbidden"] += 1
            return self.send(403, "Your client does not have permission to get URL /computeMetadata/v1/" + key +
                             " from this server. Missing Metadata-Flavor:Google header.", "text/html; charset=UTF-8", flavor)
        if key == "instance/service-accounts/default/token":
            return self.send(200, fake.issue_token("metadata"), headers=flavor)
        if key not in fake.metadata:
            return self.send(404, "Not Found", "text/html; charset=UTF-8", flavor)
        wait = query.get("wait_for_change", ["false"])[0].lower() == "true"
        if wait:
            try:
                timeout = float(query.get("timeout_sec", ["3600"])[0])
            except ValueError:
                return self.send(400, "timeout_sec must be a number", "text/plain", flavor)
            last = query.get("last_etag", [None])[0]
            deadline = time.time() + max(0.0, timeout)
            with fake.cond:
                start = fake.etags[key]
                fake.waiters[key] = fake.waiters.get(key, 0) + 1
                try:
                    # With last_etag: answer at once when the value already differs. Without:
                    # wait for the next change from now.
                    # A client that hangs up ends its long-poll (so `waiters` counts live ones).
                    reference = last if last is not None else start
                    while fake.etags[key] == reference and time.time() < deadline and not self.client_gone():
                        fake.cond.wait(min(0.2, max(0.0, deadline - time.time())))
                finally:
                    fake.waiters[key] -= 1
            if self.client_gone():
                self.close_connection = True
                return
        with fake.cond:
            value, etag = fake.metadata[key], fake.etags[key]
        self.send(200, value, "application/text", {"Metadata-Flavor": "Google", "ETag": etag})

    # ---- Compute Engine API ---------------------------------------------------------------

    def compute(self, method, path, query):
        fake = self.fake
        with fake.cond:
            fake.counters["compute_calls"] += 1
        if not fake.token_valid(self.headers.get("Authorization")):
            with fake.cond:
                fake.counters["compute_unauthenticated"] += 1
            msg = ("Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other "
                   "valid authentication credential.")
            return self.send(401, google_error(401, msg, "required", "UNAUTHENTICATED"),
                             headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        m = re.fullmatch(r"projects/([^/]+)/zones/([^/]+)/(instances|operations)(?:/([^/]+))?(?:/(start|stop))?", path)
        if not m:
            return self.send(404, google_error(404, "Not Found", "notFound", "NOT_FOUND"))
        project, zone, collection, name, action = m.groups()
        if project != fake.args.project:
            return self.send(404, google_error(404, f"The resource 'projects/{project}' was not found", "notFound", "NOT_FOUND"))
        if zone != fake.args.zone:
            return self.send(404, google_error(404, f"The resource 'projects/{project}/zones/{zone}' was not found", "notFound", "NOT_FOUND"))
        user = "fake-service-account@" + project + ".iam.gserviceaccount.com"
        if collection == "operations":
            if method != "GET" or action:
                return self.send(405, google_error(405, "Method not allowed", "httpMethodNotAllowed", "METHOD_NOT_ALLOWED"))
            if name is None:
                return self.list_operations(query)
            with fake.cond:
                op = fake.operations.get(name)
                fake.counters["operation_polls"] += 1
                body = dict(op) if op else None
            if body is None:
                return self.send(404, google_error(404, f"The resource 'projects/{project}/zones/{zone}/operations/{name}' was not found",
                                                   "notFound", "NOT_FOUND"))
            return self.send(200, body)
        if name is None or name not in fake.instances:
            what = f"projects/{project}/zones/{zone}/instances/{name or ''}"
            return self.send(404, google_error(404, f"The resource '{what}' was not found", "notFound", "NOT_FOUND"))
        if method == "GET" and not action:
            body = fake.instance_json(name)
            if body is None:
                return self.send(404, google_error(404, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
                                                   "notFound", "NOT_FOUND"))
            return self.send(200, body)
        if method == "POST" and action in ("start", "stop"):
            op = fake.new_operation(name, action, user)
            target = fake.run_start if action == "start" else (lambda n, o: fake.run_stop(n, o, False))
            threading.Thread(target=target, args=(name, op), daemon=True).start()
            with fake.cond:
                body = dict(op)
            return self.send(200, body)
        self.send(405, google_error(405, "Method not allowed", "httpMethodNotAllowed", "METHOD_NOT_ALLOWED"))

    def list_operations(self, query):
        fake = self.fake
        terms = re.findall(r'\(\s*(\w+)\s*=\s*"([^"]*)"\s*\)', query.get("filter", [""])[0])
        with fake.cond:
            items = [dict(op) for op in fake.operations.values() if all(str(op.get(k)) == v for k, v in terms)]
        items.sort(key=lambda op: op["insertTime"], reverse=True)
        body = {"kind": "compute#operationList", "id": f"projects/{fake.args.project}/zones/{fake.args.zone}/operations",
                "items": items, "selfLink": fake.zone_link() + "/operations"}
        self.send(200, body)


class ControlHandler(Handler):
    def do_GET(self):
        if urlsplit(self.path).path == "/_fake/state":
            return self.send(200, self.fake.state())
        self.send(404, {"error": "no such control"})

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            req = json.loads(self.body() or b"{}")
        except ValueError:
            return self.send(400, {"error": "body is not JSON"})
        fake = self.fake
        if path == "/_fake/preempt":
            name = req.get("instance", fake.args.self)
            if name not in fake.instances:
                return self.send(404, {"error": f"no instance {name}"})
            op = fake.preempt(name)
            return self.send(200, {"operation": op["name"], "at": time.time()})
        if path == "/_fake/maintenance":
            fake.set_meta("instance/maintenance-event", str(req.get("value", "NONE")))
            return self.send(200, {"at": time.time()})
        if path == "/_fake/revoke-tokens":
            with fake.cond:
                n = len(fake.tokens)
                fake.tokens.clear()
            return self.send(200, {"revoked": n})
        if path == "/_fake/fail-starts":
            with fake.cond:
                fake.fail_starts = {"count": int(req.get("count", 1)), "code": str(req.get("code", "QUOTA_EXCEEDED")),
                                    "message": str(req.get("message", "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1."))}
            return self.send(200, fake.fail_starts)
        self.send(404, {"error": "no such control"})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--zone", required=True)
    p.add_argument("--instance", action="append", required=True)
    p.add_argument("--self", required=True, help="the instance the metadata server describes")
    p.add_argument("--incus-project", default="default")
    p.add_argument("--nat-ip")
    p.add_argument("--sa-email")
    p.add_argument("--sa-key-id")
    p.add_argument("--sa-public-key")
    args = p.parse_args()

    fake = Fake(args)
    api_handler = type("API", (APIHandler,), {"fake": fake})
    control_handler = type("Control", (ControlHandler,), {"fake": fake})
    api = ThreadingHTTPServer(("127.0.0.1", 0), api_handler)
    control = ThreadingHTTPServer(("127.0.0.1", 0), control_handler)
    api.daemon_threads = control.daemon_threads = True
    fake.api_port = api.server_address[1]
    threading.Thread(target=control.serve_forever, daemon=True).start()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"api": api.server_address[1], "control": control.server_address[1], "pid": os.getpid()}, f)
    os.replace(tmp, args.ready_file)
    api.serve_forever()


if __name__ == "__main__":
    main()
