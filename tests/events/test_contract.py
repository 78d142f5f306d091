"""The generated event contract is valid: every schema against the JSON Schema 2020-12 metaschema,
the AsyncAPI document against the official AsyncAPI 3.0.0 JSON Schema (from the pinned npm package
@asyncapi/specs that `make setup` installs), and every schema the document refers to exists.

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
SPECS = pathlib.Path(
    os.environ.get("TERN_ASYNCAPI_SPECS", ROOT / ".tools" / "node_modules" / "@asyncapi" / "specs")
)


def test_there_is_a_schema_per_event_type():
    names = {p.stem for p in SCHEMAS}
    assert "tern.failover.succeeded" in names and "tern.plan.completed" in names, names
    assert len(names) >= 38


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
    for key, message in messages.items():
        assert message["headers"] == {"$ref": "#/components/schemas/CloudEventsHeaders"}
        if message["contentType"] == "application/json":
            target = EVENTS / message["payload"]["$ref"]
            assert target.is_file(), f"{key}: {target} does not exist"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "tern.events.{plan}.{phase}.{outcome}" in addresses
    assert "tern.json.events.{plan}.plan.{kind}" in addresses
    assert all(o["action"] == "receive" for o in doc["operations"].values())
