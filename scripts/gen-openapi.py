#!/usr/bin/env python3
"""Generate the REST API's OpenAPI 3 document once, and commit the output:

    python3 scripts/gen-openapi.py

writes docs/openapi.json (for people and tools) and
Sources/ContainariumDaemon/OpenAPIDocument.swift (served at /openapi.json), so no build step
generates code. Edit this file when a route or a JSON shape changes, rerun, commit both.
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props, required=(), additional=False):
    o = {"type": "object", "properties": props, "additionalProperties": additional}
    if required:
        o["required"] = list(required)
    return o


STR = {"type": "string"}
INT = {"type": "integer", "minimum": 0}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
USERNAME = {"type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$", "description": "Linux user name; the environment is <username>-container."}
KIND = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$", "description": "Backend kind (lxc, vm); omit to take the kind of the backend that serves the OS type best."}

schemas = {
    "Error": obj({"error": obj({"code": {"type": "string", "enum": [
        "invalid_argument", "not_found", "already_exists", "failed_precondition", "resource_exhausted", "permission_denied",
        "unauthenticated", "unavailable", "timeout", "cancelled", "unsupported", "internal", "plugin_load"]},
        "message": STR, "cause": STR}, ["code", "message"])}, ["error"]),
    "Resources": obj({"cpu": STR, "memory": STR, "disk": STR}),
    "CreateContainerRequest": obj({
        "username": USERNAME,
        "sshKeys": {"type": "array", "items": STR, "description": "OpenSSH public keys (authorized_keys lines). Optional: without one the environment is reached through the browser terminal until keys are added (POST .../ssh-keys)."},
        "sshKey": STR,
        "resources": ref("Resources"),
        "cpu": STR, "memory": STR, "disk": STR,
        "osType": {"type": "string", "description": "e.g. OS_TYPE_DEBIAN_12, OS_TYPE_UBUNTU_2404 (mapped to images by operator config)"},
        "image": STR, "stack": STR,
        "labels": {"type": "object", "additionalProperties": STR},
        "autostart": BOOL, "nesting": BOOL,
        "enablePodman": {"type": "boolean", "description": "Install Podman inside (needs nesting; 400 where the node's config does not offer it)."},
        "enableDocker": {"type": "boolean", "description": "Install Docker inside and add the user to the docker group (needs nesting; 400 where not offered)."},
        "async": {"type": "boolean", "description": "Return 202 with an operation instead of waiting."},
        "gpus": {"type": "integer", "minimum": 0, "maximum": 16, "description": "GPUs to pass through; the scheduler picks the node and the PCI addresses."},
        "gpuModel": {"type": "string", "description": "Only GPUs of this model, as GET /v1/nodes shows it."},
        "node": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$", "description": "Create it on this node (the scheduler's filters still apply); omit to let the scheduler choose."},
        "kind": KIND,
    }, ["username"]),
    "Container": obj({
        "name": STR, "username": STR, "owner": STR,
        "state": {"type": "string", "enum": ["CONTAINER_STATE_RUNNING", "CONTAINER_STATE_STOPPED", "CONTAINER_STATE_FROZEN",
                                              "CONTAINER_STATE_STARTING", "CONTAINER_STATE_STOPPING", "CONTAINER_STATE_ERROR",
                                              "CONTAINER_STATE_UNKNOWN", "CONTAINER_STATE_CREATING"]},
        "image": STR, "resources": ref("Resources"),
        "usage": obj({"cpuNanoseconds": INT, "memoryBytes": INT, "diskBytes": INT, "processes": INT}),
        "network": obj({"ipAddress": STR, "ipv4": {"type": "array", "items": STR}}, ["ipv4"]),
        "autostart": BOOL, "nestingEnabled": BOOL, "labels": {"type": "object", "additionalProperties": STR},
        "backend": STR, "node": STR, "sshHostKeys": {"type": "array", "items": STR}, "createdAt": TIME, "startedAt": TIME,
        "gpus": {"type": "array", "items": STR, "description": "PCI addresses of the GPUs passed through."},
        "endpoints": {"type": "object", "additionalProperties": STR, "description": "Other ways in, e.g. {\"rdp\": \"HOST:PORT\"} for Windows VMs."},
        "type": {"type": "string", "enum": ["container", "vm"], "description": "What backs the environment."},
    }, ["name", "username", "state", "resources", "usage", "network", "autostart", "nestingEnabled", "labels", "sshHostKeys"]),
    "UsageSample": obj({"at": TIME, "cpuPercent": {"type": "number", "minimum": 0}, "memoryBytes": INT, "diskBytes": INT,
                        "rxBytesPerSecond": {"type": "number", "minimum": 0}, "txBytesPerSecond": {"type": "number", "minimum": 0}},
                       ["at", "cpuPercent", "memoryBytes", "diskBytes", "rxBytesPerSecond", "txBytesPerSecond"]),
    "UsageHistory": obj({"samples": {"type": "array", "items": ref("UsageSample")}}, ["samples"]),
    "NodeMetrics": {"type": "object", "properties": {"node": STR, "capacity": {"type": "object"}, "samples": {"type": "array", "items": ref("UsageSample")}},
                    "required": ["node", "samples"]},
    "Catalog": obj({"osTypes": {"type": "array", "items": STR}, "defaultImage": STR,
                    "stacks": {"type": "array", "items": obj({"name": STR, "description": STR}, ["name", "description"])}},
                   ["osTypes", "defaultImage", "stacks"]),
    "SSHConfig": obj({"config": STR}, ["config"]),
    "ContainerList": obj({"containers": {"type": "array", "items": ref("Container")}, "totalCount": INT}, ["containers", "totalCount"]),
    "Operation": obj({
        "id": STR, "kind": STR, "target": STR,
        "state": {"type": "string", "enum": ["OPERATION_STATE_RUNNING", "OPERATION_STATE_SUCCEEDED", "OPERATION_STATE_FAILED"]},
        "step": INT, "total": INT, "message": STR,
        "error": obj({"code": STR, "message": STR, "cause": STR}, ["code", "message"]),
        "result": {}, "createdAt": TIME, "updatedAt": TIME,
    }, ["id", "kind", "target", "state", "step", "total", "message", "createdAt", "updatedAt"]),
    "Message": obj({"message": STR}, ["message"]),
    "ResizeRequest": obj({"cpu": STR, "memory": STR, "disk": STR, "resources": ref("Resources")}),
    "StopRequest": obj({"force": BOOL}),
    "InstallStackRequest": obj({"stack": STR, "stackId": STR}),
    "InstallStackResult": obj({"stack": STR, "check": STR}, ["stack", "check"]),
    "Cleanup": obj({"username": STR, "diskUsageBeforeBytes": INT, "diskUsageAfterBytes": INT, "freedBytes": INT}, ["username"]),
    "Key": obj({"fingerprint": STR, "type": STR, "comment": STR, "publicKey": STR}, ["fingerprint", "type", "comment", "publicKey"]),
    "KeyList": obj({"keys": {"type": "array", "items": ref("Key")}}, ["keys"]),
    "AddKeyRequest": obj({"sshPublicKey": STR, "publicKey": STR}),
    "Collaborator": obj({"collaboratorUsername": STR, "addedBy": STR, "addedAt": TIME, "sudo": BOOL, "containerRuntime": BOOL},
                        ["collaboratorUsername", "addedBy", "addedAt", "sudo", "containerRuntime"]),
    "CollaboratorList": obj({"collaborators": {"type": "array", "items": ref("Collaborator")}}, ["collaborators"]),
    "AddCollaboratorRequest": obj({"collaboratorUsername": USERNAME,
                                   "sshPublicKey": {"type": "string", "description": "Ed25519 or ECDSA public key for the collaborator's account (RSA is refused: the SSH gateway cannot verify it)."},
                                   "sudo": {"type": "boolean", "description": "Full sudo. Default: only a logged `sudo su - OWNER`."},
                                   "containerRuntime": {"type": "boolean", "description": "Add the account to the docker group."}},
                                  ["collaboratorUsername"]),
    "AuditEntry": obj({"id": STR, "at": TIME, "actor": STR, "role": STR, "action": STR, "target": STR, "source": STR,
                       "interface": {"type": "string", "enum": ["rest", "grpc", "cli", "ssh"]}, "result": STR, "detail": STR},
                      ["id", "at", "actor", "role", "action", "target", "source", "interface", "result", "detail"]),
    "AuditList": obj({"entries": {"type": "array", "items": ref("AuditEntry")}}, ["entries"]),
    "SystemInfo": {"type": "object", "required": ["version", "node", "backend", "containers", "database"],
                   "properties": {"version": STR, "pluginAbi": STR, "node": STR, "backend": STR, "uptimeSeconds": {"type": "number"},
                                  "containers": obj({"total": INT, "running": INT}, ["total", "running"]), "database": STR,
                                  "eventStream": BOOL, "capacity": {"type": "object"}}},
    "Metrics": obj({"containers": {"type": "array", "items": {"type": "object"}}}, ["containers"]),
    "Backends": obj({"backends": {"type": "array", "items": {"type": "object"}},
                     "nodes": {"type": "array", "items": ref("Node")}}, ["backends", "nodes"]),
    "Resources3": {"type": "object", "properties": {"cpuMillis": {"type": "integer"}, "memoryBytes": {"type": "integer"}, "diskBytes": {"type": "integer"}},
                   "required": ["cpuMillis", "memoryBytes", "diskBytes"]},
    "Node": {"type": "object", "properties": {
        "name": STR, "address": STR, "local": BOOL, "healthy": BOOL, "draining": BOOL, "lastSeen": TIME,
        "kinds": {"type": "array", "items": STR}, "capacity": ref("Resources3"), "used": ref("Resources3"),
        "gpus": {"type": "array", "items": {"type": "object", "properties": {"pciAddress": STR, "model": STR, "attachedTo": STR},
                                            "required": ["pciAddress", "model"]}},
        "labels": {"type": "object", "additionalProperties": STR},
        "pool": STR, "preemptible": BOOL, "environments": {"type": "integer", "minimum": 0},
        "sshGateway": {"type": "string", "description": "The node's SSH gateway (HOST:PORT), when it runs one."},
        "plugins": {"type": "array", "items": {"type": "object", "properties": {"id": STR, "version": STR, "abi": STR, "state": STR,
                                                                               "capabilities": {"type": "array", "items": STR},
                                                                               "kinds": {"type": "array", "items": STR},
                                                                               "osTypes": {"type": "array", "items": STR}}}}},
        "required": ["name", "local", "healthy", "draining", "kinds", "capacity", "used", "gpus", "labels", "preemptible", "environments"]},
    "NodeList": obj({"nodes": {"type": "array", "items": ref("Node")}}, ["nodes"]),
    "ExplainRequest": obj({"cpu": STR, "memory": STR, "disk": STR, "osType": STR, "image": STR,
                           "gpus": {"type": "integer", "minimum": 0, "maximum": 16}, "gpuModel": STR, "node": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$"}, "kind": KIND,
                           "labels": {"type": "object", "additionalProperties": STR, "description": "node.KEY=VALUE labels select nodes"}}, []),
    "Explanation": {"type": "object", "properties": {
        "request": {"type": "object"}, "policy": {"type": "object"}, "chosen": STR,
        "backend": {"type": "string", "description": "The instance backend the chosen node maps the request's kind to."},
        "verdicts": {"type": "array", "items": {"type": "object", "properties": {
            "node": STR, "filteredBecause": {"type": "array", "items": {"type": "object"}}, "score": {"type": "number"},
            "scoreParts": {"type": "object", "additionalProperties": {"type": "number"}}}, "required": ["node", "filteredBecause", "scoreParts"]}}},
        "required": ["request", "policy", "verdicts"]},
    "Plugins": obj({"plugins": {"type": "array", "items": {"type": "object"}}}, ["plugins"]),
    "Health": obj({"status": STR}, ["status"]),
    # One server-sent event as SSE frames it: `id`, `event` (the type) and `data`, a JSON
    # object {id, type, username?, time, data}.
    "Event": {"type": "object", "required": ["data"], "properties": {
        "id": STR, "event": {"type": "string", "description": "operation.progress, operation.finished, container.changed, container.removed, audit, stack.progress"},
        "data": {"type": "string", "description": "JSON: {id, type, username, time, data}"}}},
}


def err(desc):
    return {"description": desc, "content": {"application/json": {"schema": ref("Error")}}}


def ok(schema_name, code="200", desc="OK"):
    return {code: {"description": desc, "content": {"application/json": {"schema": ref(schema_name)}}}}


COMMON = {"400": err("Invalid input (malformed JSON, unknown field, bad value)"), "401": err("Missing, expired or invalid token"),
          "403": err("Authenticated, but not allowed"), "404": err("No such environment, route or operation")}


def op(summary, responses, body=None, params=(), tag="containers", extra=None):
    o = {"summary": summary, "tags": [tag], "responses": {**responses, **COMMON}, "security": [{"bearer": []}]}
    if body:
        o["requestBody"] = {"required": body[1], "content": {"application/json": {"schema": ref(body[0])}}}
    if params:
        o["parameters"] = list(params)
    if extra:
        o["responses"].update(extra)
    return o


# The path parameter carries an example: fuzzers (schemathesis) then reach a real environment
# of that name (the fuzz test creates one), not only random names that answer 404.
# Routes that work inside the environment (exec) answer 412 while it is stopped.
NOT_RUNNING = {"412": err("The environment is not running: start it first")}
U = {"name": "username", "in": "path", "required": True, "schema": USERNAME, "example": "alice"}
C = {"name": "collaborator", "in": "path", "required": True, "schema": USERNAME}
N = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$"}}

paths = {
    "/healthz": {"get": {"summary": "Liveness (no authentication)", "tags": ["system"], "security": [],
                         "responses": ok("Health")}},
    "/v1/containers": {
        "post": op("Create an environment", {**ok("Container", "201", "Created"),
                                              "202": {"description": "Accepted (async)", "content": {"application/json": {"schema": ref("Operation")}}},
                                              "409": err("Already exists"),
                                              "429": err("No node has room for it (capacity after over-commit, or free GPUs of the model)")},
                   ("CreateContainerRequest", True)),
        "get": op("List environments the caller may see", ok("ContainerList")),
    },
    "/v1/containers/{username}": {
        "get": op("Get an environment", ok("Container"), params=[U]),
        "delete": op("Delete an environment (owner or admin)", {**ok("Message"), "412": err("It is running and force is false, or it is still being created")},
                     params=[U, {"name": "force", "in": "query", "required": False, "schema": {"type": "boolean"}}]),
    },
    "/v1/containers/{username}/start": {"post": op("Start", ok("Container"), params=[U])},
    "/v1/containers/{username}/stop": {"post": op("Stop", ok("Container"), ("StopRequest", False), params=[U])},
    "/v1/containers/{username}/restart": {"post": op("Restart", ok("Container"), params=[U])},
    "/v1/containers/{username}/resize": {"put": op("Resize CPU, memory, disk live", {**ok("Container"), "412": err("The disk would shrink below what is in use, or is completely full")},
                                                   ("ResizeRequest", True), params=[U])},
    "/v1/containers/{username}/install-stack": {"post": op("Install a software stack", {**ok("InstallStackResult"), **NOT_RUNNING}, ("InstallStackRequest", True), params=[U])},
    "/v1/containers/{username}/cleanup-disk": {"post": op("Free disk space", {**ok("Cleanup"), "412": err("The environment is not running, or stopped while the cleanup ran")}, params=[U])},
    "/v1/containers/{username}/ssh-keys": {
        "get": op("List SSH keys", {**ok("KeyList"), **NOT_RUNNING}, params=[U]),
        "post": op("Add an SSH key", {**ok("Key", "201", "Added"), "409": err("Key already present"), **NOT_RUNNING}, ("AddKeyRequest", True), params=[U]),
        "delete": op("Remove an SSH key", {**ok("Message"), "412": err("Would remove the last key, or the environment is not running")},
                     params=[U, {"name": "fingerprint", "in": "query", "required": True, "schema": STR}]),
    },
    "/v1/containers/{username}/collaborators": {
        "get": op("List collaborators", {**ok("CollaboratorList"), **NOT_RUNNING}, params=[U]),
        "post": op("Add a collaborator (owner or admin)", {**ok("Collaborator", "201", "Added"), "409": err("Already a collaborator"), **NOT_RUNNING},
                   ("AddCollaboratorRequest", True), params=[U]),
    },
    "/v1/containers/{username}/collaborators/{collaborator}": {
        "delete": op("Remove a collaborator (owner or admin)", {**ok("Message"), **NOT_RUNNING}, params=[U, C]),
    },
    "/v1/containers/{username}/metrics": {"get": op("Usage over the last hour (dashboard charts)", ok("UsageHistory"), params=[U])},
    "/v1/containers/{username}/ssh-config": {"get": op("An SSH config block for the environment (through the gateway when one runs)", ok("SSHConfig"), params=[U],
                                                       extra={"412": err("The environment has no IPv4 address (it is stopped)")})},
    "/v1/containers/{username}/terminal": {"get": op(
        "Browser terminal: a WebSocket (Sec-WebSocket-Protocol: containarium.v1, bearer.<token>); binary frames carry terminal bytes, "
        "text frames JSON control ({type: resize, cols, rows}; {type: exit|error}). A plain GET is authorized, then answered 400.",
        {"101": {"description": "Switching Protocols (WebSocket)"}}, params=[U,
        {"name": "cols", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        {"name": "rows", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}])},
    "/v1/containers/{username}/vnc": {"get": op(
        "A VM's screen: a WebSocket (Sec-WebSocket-Protocol: containarium.v1, bearer.<token>) whose binary frames carry the VM's "
        "VNC (RFB) stream both ways, for noVNC; relayed from the VM's node by a control plane. A plain GET is authorized, then answered 400.",
        {"101": {"description": "Switching Protocols (WebSocket)"}}, params=[U])},
    "/v1/catalog": {"get": op("OS types, stacks and the default image (for create forms)", ok("Catalog"), tag="system")},
    "/v1/metrics/node": {"get": op("This node's usage over the last hour, with its capacity (admin)", ok("NodeMetrics"), tag="system")},
    "/v1/system/info": {"get": op("Node and daemon information", ok("SystemInfo"), tag="system")},
    "/v1/metrics": {"get": op("Per-environment usage", ok("Metrics"), tag="system")},
    "/v1/backends": {"get": op("Instance backends and their health", ok("Backends"), tag="system")},
    "/v1/plugins": {"get": op("Plugins on this node", ok("Plugins"), tag="system")},
    "/v1/nodes": {"get": op("The cluster's nodes with health, capacity and use (admin)", ok("NodeList"), tag="cluster")},
    "/v1/nodes/{name}/drain": {"post": op("Stop placing environments on a node (admin)", ok("Node"), tag="cluster", params=[N])},
    "/v1/nodes/{name}/undrain": {"post": op("Place environments on a node again (admin)", ok("Node"), tag="cluster", params=[N])},
    "/v1/nodes/{name}": {"delete": op("Forget a node (admin; its environments stay on the machine)", ok("Message"), tag="cluster", params=[
        N, {"name": "force", "in": "query", "required": False, "schema": BOOL}], extra={"412": err("The node still has environments")})},
    "/v1/schedule/explain": {"post": op("Why each node would or would not take an environment (admin)", ok("Explanation"),
                                        ("ExplainRequest", False), tag="cluster")},
    "/v1/operations/{id}": {"get": op("Poll an asynchronous operation", ok("Operation"),
                                      params=[{"name": "id", "in": "path", "required": True, "schema": STR}], tag="operations")},
    "/v1/audit": {"get": op("Query the audit log (admin)", ok("AuditList"), tag="audit", params=[
        {"name": n, "in": "query", "required": False, "schema": STR} for n in ("actor", "action", "target", "result")] + [
        {"name": "since", "in": "query", "required": False, "schema": TIME},
        {"name": "until", "in": "query", "required": False, "schema": TIME},
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}])},
    "/v1/events": {"get": {"summary": "Server-Sent Events: progress, state changes, audit (filtered by access)", "tags": ["events"],
                           "security": [{"bearer": []}],
                           "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": ref("Event")}}},
                                         "401": err("Missing, expired or invalid token")}}},
}


def nullable_optionals(schema):
    """A request's optional fields may be null, meaning absent (the proto3 JSON mapping), and the
    daemon treats them so; say it, so clients and fuzzers know null is accepted. Nested request
    objects are inlined, because OpenAPI 3.0 ignores `nullable` beside a $ref."""
    out = dict(schema)
    required = set(schema.get("required", []))
    props = {}
    for name, prop in schema.get("properties", {}).items():
        if "$ref" in prop:
            prop = nullable_optionals(schemas[prop["$ref"].rsplit("/", 1)[-1]])
        if name not in required:
            prop = dict(prop, nullable=True)
        props[name] = prop
    out["properties"] = props
    return out


REQUESTS = ["CreateContainerRequest", "ExplainRequest", "ResizeRequest", "StopRequest", "AddKeyRequest",
            "AddCollaboratorRequest", "InstallStackRequest"]
for name in REQUESTS:
    schemas[name] = nullable_optionals(schemas[name])

doc = {
    "openapi": "3.0.3",
    "info": {"title": "Containarium REST API", "version": "0.2.0",
             "description": "Every route except /healthz needs `Authorization: Bearer <token>` (mint with `containarium token generate`). "
                            "Errors are `{\"error\": {\"code\", \"message\"}}` with a stable code."},
    "servers": [{"url": "/"}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}, "schemas": schemas},
    "security": [{"bearer": []}],
    "paths": paths,
}

text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
(ROOT / "docs" / "openapi.json").write_text(text)
compact = json.dumps(doc, separators=(",", ":"), sort_keys=True)
swift = (
    "// Generated by scripts/gen-openapi.py from the same source as docs/openapi.json. Do not edit.\n"
    "enum OpenAPIDocument {\n"
    "    static let json = #\"\"\"\n" + compact + "\n\"\"\"#\n"
    "}\n"
)
(ROOT / "Sources" / "ContainariumDaemon" / "OpenAPIDocument.swift").write_text(swift)
print(f"wrote docs/openapi.json ({len(text)} bytes) and OpenAPIDocument.swift")
