"""The generated event contract is valid: every schema against the JSON Schema 2020-12 metaschema,
the AsyncAPI document against the official AsyncAPI 3.0.0 JSON Schema (from the pinned npm package
@asyncapi/specs that `make setup` installs), every schema the document refers to exists, and the
wave hooks' schemas accept what the planner sends and what a runner answers.

Run by `make events-check` (part of `make test`); set TERN_ASYNCAPI_SPECS to the package's
directory to run it elsewhere."""

import json
import os
import pathlib

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
EVENTS = ROOT / "docs" / "events"
SCHEMAS = sorted((EVENTS / "schemas").glob("*.json"))
HOOK_SCHEMAS = {"tern.hooks.request", "tern.hooks.response"}
SPECS = pathlib.Path(
    os.environ.get("TERN_ASYNCAPI_SPECS", ROOT / ".tools" / "node_modules" / "@asyncapi" / "specs")
)


def test_there_is_a_schema_per_event_type():
    names = {p.stem for p in SCHEMAS}
    assert "tern.failover.succeeded" in names and "tern.plan.completed" in names, names
    assert HOOK_SCHEMAS <= names, names
    assert len(names - HOOK_SCHEMAS) >= 38


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_each_schema_is_valid_json_schema_2020_12_and_its_id_is_its_dataschema(path):
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/docs/events/schemas/{path.name}")
    assert schema["title"] == path.stem


def test_the_asyncapi_document_is_valid_asyncapi_3_0_0():
    spec_file = SPECS / "schemas" / "3.0.0.json"
    assert spec_file.is_file(), f"{spec_file} is missing: run `make setup` (it installs @asyncapi/specs)"
    spec = json.loads(spec_file.read_text())
    doc = yaml.safe_load((EVENTS / "asyncapi.yaml").read_text())
    assert doc["asyncapi"] == "3.0.0"
    validator = jsonschema.Draft7Validator(spec)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def test_every_message_names_an_existing_schema_and_the_headers_schema():
    doc = yaml.safe_load((EVENTS / "asyncapi.yaml").read_text())
    messages = doc["components"]["messages"]
    assert {m["contentType"] for m in messages.values()} == {"application/protobuf", "application/json"}
    hook_headers = {
        "hookRequest": "HookRequestHeaders",
        "hookResponse": "HookResponseHeaders",
    }
    for key, message in messages.items():
        headers = hook_headers.get(key, "CloudEventsHeaders")
        assert message["headers"] == {"$ref": f"#/components/schemas/{headers}"}, key
        assert headers in doc["components"]["schemas"]
        if message["contentType"] == "application/json":
            target = EVENTS / message["payload"]["$ref"]
            assert target.is_file(), f"{key}: {target} does not exist"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "tern.events.{plan}.{phase}.{outcome}" in addresses
    assert "tern.json.events.{plan}.plan.{kind}" in addresses
    events = {k: o for k, o in doc["operations"].items() if o["channel"]["$ref"] != "#/channels/hooks"}
    assert all(o["action"] == "receive" for o in events.values())


def test_the_hook_channels_and_operations():
    doc = yaml.safe_load((EVENTS / "asyncapi.yaml").read_text())
    hooks = doc["channels"]["hooks"]
    assert hooks["address"] == "tern.hooks.{hook}"
    assert "hook" in hooks["parameters"]
    assert doc["channels"]["hookReplies"]["address"] is None
    send = doc["operations"]["sendHookRequest"]
    assert send["action"] == "send"
    assert send["messages"] == [{"$ref": "#/channels/hooks/messages/hookRequest"}]
    assert send["reply"] == {
        "channel": {"$ref": "#/channels/hookReplies"},
        "messages": [{"$ref": "#/channels/hookReplies/messages/hookResponse"}],
    }
    answer = doc["operations"]["answerHookRequest"]
    assert answer["action"] == "receive" and answer["reply"] == send["reply"]
    for fact in ("`hooks` NATS identity", "_INBOX_hooks", "queue group", "hook_id", "timeout"):
        assert fact in answer["description"], fact
    request_headers = doc["components"]["schemas"]["HookRequestHeaders"]["properties"]
    assert "traceparent" in request_headers
    assert {k.lower() for k in request_headers} >= {"content-type", "traceparent"}


def hook_validator(name):
    schema = json.loads((EVENTS / "schemas" / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


# A request as the planner writes it (protobuf's JSON mapping leaves out `wave`, `step` and every
# other field at its default value).
SAMPLE_REQUEST = {
    "hook_id": "plan-1.gate.0.before.0.1",
    "plan_id": "plan-1",
    "wave_number": 1,
    "when": "before",
    "step_name": "hook #1",
    "attempt": 1,
    "try": 2,
    "deadline": "2026-05-01T12:00:30.250Z",
    "vms": [
        {
            "name": "web-1",
            "protected_item_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationFabrics/f/replicationProtectionContainers/c/replicationProtectedItems/web-1",
            "resource": {
                "arm_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-1",
                "region": "eastus",
                "resource_group": "rg",
                "subscription_id": "s",
                "private_ips": ["10.0.0.4"],
            },
            "state": "VM_STATE_SUCCEEDED",
            "phase": "PHASE_COMMIT",
        },
        {"name": "web-2", "state": "VM_STATE_PENDING"},
    ],
    "labels": {"team": "web"},
}


def test_a_hook_request_as_the_planner_sends_it_is_valid():
    validator = hook_validator("tern.hooks.request")
    errors = list(validator.iter_errors(SAMPLE_REQUEST))
    assert not errors, [e.message for e in errors]
    bad = [
        {**SAMPLE_REQUEST, "when": "during"},
        {**SAMPLE_REQUEST, "hookId": "camelCase is not how Tern writes it"},
        {k: v for k, v in SAMPLE_REQUEST.items() if k != "hook_id"},
        {**SAMPLE_REQUEST, "vms": [{"name": "web-1", "state": 3}]},
        {**SAMPLE_REQUEST, "vms": [{"name": "web-1", "resource": {"region": "eastus", "zone": "1"}}]},
    ]
    for sample in bad:
        assert not validator.is_valid(sample), sample


@pytest.mark.parametrize(
    "answer",
    [{"ok": True, "message": "x"}, {"ok": False, "message": "dns server down"}, {"ok": True}, {}],
    ids=["ok", "failure", "ok-without-message", "empty-is-failure"],
)
def test_hook_answers_are_valid(answer):
    errors = list(hook_validator("tern.hooks.response").iter_errors(answer))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("answer", [{"ok": "yes"}, {"ok": True, "detail": "x"}, {"message": 1}, []])
def test_answers_tern_cannot_read_are_invalid(answer):
    assert not hook_validator("tern.hooks.response").is_valid(answer)
