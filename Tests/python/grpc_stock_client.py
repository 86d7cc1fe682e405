#!/usr/bin/env python3
"""A stock Python gRPC client against a Containarium daemon, with stubs generated from proto/
by grpcio-tools at run time (nothing of ours is imported).

    grpc_stock_client.py --proto DIR --target HOST:PORT --certs DIR --user NAME --key PUBKEY
                         [--rest URL --token JWT]

Over mTLS: lists the services by reflection (v1 and v1alpha), creates an environment, gets and
lists it, execs in it, checks that errors carry their gRPC status codes, and deletes it. With
--rest, creates a second environment through REST with the same request as proto3 JSON and
compares what both APIs answer. Prints one JSON object with what it saw; exits non-zero on any
failure.
"""
import argparse
import importlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

import grpc
from grpc_tools import protoc
from google.protobuf import json_format
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

ap = argparse.ArgumentParser()
ap.add_argument("--proto", required=True)
ap.add_argument("--target", required=True)
ap.add_argument("--certs", required=True)
ap.add_argument("--user", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--rest")
ap.add_argument("--token")
args = ap.parse_args()

# Stubs from proto/, generated now.
out = tempfile.mkdtemp(prefix="ctm-stubs-")
wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
files = []
# Our contract and the HTTP binding it imports (google/api); the standard grpc.* protos are
# grpcio's own packages' business.
for top in ("containarium", "google"):
    for root, _, names in os.walk(os.path.join(args.proto, top)):
        for n in names:
            if n.endswith(".proto"):
                files.append(os.path.relpath(os.path.join(root, n), args.proto))
rc = protoc.main(["protoc", f"-I{args.proto}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}"] + sorted(files))
if rc != 0:
    sys.exit(f"grpc_tools.protoc failed ({rc})")
sys.path.insert(0, out)
container_pb2 = importlib.import_module("containarium.v1.container_pb2")
container_grpc = importlib.import_module("containarium.v1.container_pb2_grpc")
common_pb2 = importlib.import_module("containarium.v1.common_pb2")


def read(p):
    with open(os.path.join(args.certs, p), "rb") as f:
        return f.read()


creds = grpc.ssl_channel_credentials(root_certificates=read("ca.crt"), private_key=read("client.key"), certificate_chain=read("client.crt"))
channel = grpc.secure_channel(args.target, creds)
seen = {}

# Reflection, with the stock grpcio-reflection client (v1alpha) ...
db = ProtoReflectionDescriptorDatabase(channel)
seen["services"] = sorted(db.get_services())
create_desc = db.FindFileContainingSymbol("containarium.v1.ContainerService")
seen["reflected_file"] = create_desc.name
# ... and v1 (wire-identical messages, the v1 method path).
from grpc_reflection.v1alpha import reflection_pb2 as refl_pb2
v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                           request_serializer=refl_pb2.ServerReflectionRequest.SerializeToString,
                           response_deserializer=refl_pb2.ServerReflectionResponse.FromString)
answers = list(v1(iter([refl_pb2.ServerReflectionRequest(list_services="*")]), timeout=30))
seen["services_v1"] = sorted(s.name for s in answers[0].list_services_response.service)

stub = container_grpc.ContainerServiceStub(channel)
with open(args.key) as f:
    key = f.read().strip()

request = container_pb2.CreateContainerRequest(
    username=args.user, ssh_keys=[key], resources=common_pb2.ResourceLimits(memory="512MB"), os_type=common_pb2.OS_TYPE_DEBIAN_12)
created = stub.CreateContainer(request, timeout=600).container
seen["created"] = {"name": created.name, "state": common_pb2.ContainerState.Name(created.state), "ipv4": list(created.network.ipv4)}
got = stub.GetContainer(container_pb2.GetContainerRequest(username=args.user), timeout=60)
seen["got"] = {"name": got.name, "memory": got.resources.memory, "type": common_pb2.EnvironmentType.Name(got.type), "backend": got.backend}
listed = stub.ListContainers(container_pb2.ListContainersRequest(), timeout=60)
seen["listed"] = sorted(c.username for c in listed.containers)
ran = stub.Exec(container_pb2.ExecRequest(username=args.user, command=["id", "-un"], as_user=True), timeout=60)
seen["exec"] = {"exit_code": ran.exit_code, "stdout": ran.stdout.strip()}
failed = stub.Exec(container_pb2.ExecRequest(username=args.user, command=["false"], as_user=True), timeout=60)
seen["exec_false"] = failed.exit_code

errors = {}
for label, call in [
    ("missing", lambda: stub.GetContainer(container_pb2.GetContainerRequest(username="nobody" + args.user[-6:]), timeout=30)),
    ("bad_name", lambda: stub.GetContainer(container_pb2.GetContainerRequest(username="Not_Valid!"), timeout=30)),
    ("duplicate", lambda: stub.CreateContainer(request, timeout=60)),
    ("bad_size", lambda: stub.CreateContainer(container_pb2.CreateContainerRequest(
        username=args.user + "x", resources=common_pb2.ResourceLimits(memory="lots")), timeout=60)),
]:
    try:
        call()
        errors[label] = "OK"
    except grpc.RpcError as e:
        errors[label] = e.code().name
seen["errors"] = errors

if args.rest:
    # The same calls through REST: each request is the same message as proto3 JSON
    # (json_format, the stock encoder), each answer parsed back into the RPC's response
    # message by the stock parser, which refuses anything the contract does not have.
    def rest(method, path, message=None):
        data = json_format.MessageToJson(message).encode() if message is not None else None
        req = urllib.request.Request(args.rest + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + args.token})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def parse(answer, message):
        return json_format.ParseDict(answer, message, ignore_unknown_fields=False)

    twin = container_pb2.CreateContainerRequest()
    twin.CopyFrom(request)
    twin.username = args.user + "r"
    seen["rest_body"] = json.loads(json_format.MessageToJson(twin))
    status, created_json = rest("POST", "/v1/containers", twin)
    seen["rest_status"] = status
    rest_created = parse(created_json, container_pb2.Container())
    status, got_json = rest("GET", "/v1/containers/" + twin.username)
    rest_got = parse(got_json, container_pb2.Container())
    grpc_view = stub.GetContainer(container_pb2.GetContainerRequest(username=twin.username), timeout=60)
    seen["rest_vs_grpc"] = {
        "name": [rest_got.name, grpc_view.name],
        "state": [common_pb2.ContainerState.Name(rest_got.state), common_pb2.ContainerState.Name(grpc_view.state)],
        "memory": [rest_got.resources.memory, grpc_view.resources.memory],
        "ipv4": [list(rest_got.network.ipv4), list(grpc_view.network.ipv4)],
        "type": [common_pb2.EnvironmentType.Name(rest_got.type), common_pb2.EnvironmentType.Name(grpc_view.type)],
        "created": [rest_created.name, grpc_view.name],
    }
    status, listed_json = rest("GET", "/v1/containers")
    seen["rest_listed"] = [c.username for c in parse(listed_json, container_pb2.ListContainersResponse()).containers]
    status, ran_json = rest("POST", "/v1/containers/%s/exec" % twin.username,
                            container_pb2.ExecRequest(command=["id", "-un"], as_user=True))
    ran_rest = parse(ran_json, container_pb2.ExecResponse())
    seen["rest_exec"] = {"status": status, "exit_code": ran_rest.exit_code, "stdout": ran_rest.stdout.strip()}
    status, failed_json = rest("POST", "/v1/containers/%s/exec" % twin.username,
                               container_pb2.ExecRequest(command=["false"], as_user=True))
    seen["rest_exec_false"] = parse(failed_json, container_pb2.ExecResponse()).exit_code
    rest_errors = {}
    for label, (method, path, message) in {
        "missing": ("GET", "/v1/containers/nobody" + args.user[-6:], None),
        "bad_name": ("GET", "/v1/containers/Not_Valid!", None),
        "duplicate": ("POST", "/v1/containers", twin),
        "bad_size": ("POST", "/v1/containers", container_pb2.CreateContainerRequest(
            username=args.user + "y", resources=common_pb2.ResourceLimits(memory="lots"))),
    }.items():
        status, answer = rest(method, path, message)
        rest_errors[label] = [status, answer.get("error", {}).get("code")]
    seen["rest_errors"] = rest_errors
    status, _ = rest("DELETE", "/v1/containers/%s?force=true" % twin.username)
    seen["rest_deleted"] = status
    seen["rest_after_delete"] = rest("GET", "/v1/containers/" + twin.username)[0]

deleted = stub.DeleteContainer(container_pb2.DeleteContainerRequest(username=args.user, force=True), timeout=300)
seen["deleted"] = deleted.message
try:
    stub.GetContainer(container_pb2.GetContainerRequest(username=args.user), timeout=30)
    seen["after_delete"] = "OK"
except grpc.RpcError as e:
    seen["after_delete"] = e.code().name
print(json.dumps(seen))
