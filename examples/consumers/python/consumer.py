#!/usr/bin/env python3
"""A DNS-style switcher fed by Tern's JSON events.

It reads the JSON mirror of Tern's lifecycle events (`tern.json.events.>`, stream
TERN_EVENTS_JSON) with an ordered JetStream consumer, as the `events-reader` NATS identity, turns
each message into a CloudEvent with the CloudEvents SDK (binary mode: `ce-*` headers + JSON data),
checks the data against the JSON Schema its `dataschema` names, and on every
`tern.failover.succeeded` records where the VM now runs: a JSON file mapping each VM's name to
its ARM id, region, resource group and private IPs.

    python consumer.py --endpoints .tern/endpoints.json --records records.json

`--endpoints` is the file `tern up` writes (it names the NATS URL and the events-reader's nkey
seed); `--nats-url` and `--credentials` (an nkey seed or a JWT .creds file) say the same
explicitly. It replays everything the stream holds, then follows new events until interrupted.
"""

import argparse
import asyncio
import json
import os
import pathlib
import signal
import sys
import tempfile

import jsonschema
import nats
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event
from nats.js.api import DeliverPolicy

JSON_SUBJECTS = "tern.json.events.>"
JSON_STREAM = "TERN_EVENTS_JSON"
# The events-reader may only receive replies on its own inbox prefix.
INBOX_PREFIX = "_INBOX_events-reader"
DEFAULT_SCHEMAS = pathlib.Path(__file__).resolve().parents[3] / "docs" / "events" / "schemas"


class SchemaBook:
    """The committed schemas, by their `$id` (the events' `dataschema`)."""

    def __init__(self, directory: pathlib.Path):
        self.validators = {}
        for path in sorted(directory.glob("*.json")):
            schema = json.loads(path.read_text())
            self.validators[schema["$id"]] = jsonschema.Draft202012Validator(schema)
        if not self.validators:
            raise SystemExit(f"no schemas in {directory}: pass --schemas DIR (docs/events/schemas)")

    def check(self, dataschema, data):
        validator = self.validators.get(dataschema)
        if validator is None:
            raise ValueError(f"no schema with $id {dataschema!r}")
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            raise ValueError(f"data does not match {dataschema}: at /{where}: {errors[0].message}")


class Records:
    """The record file: VM name -> where it runs. Written whole, atomically, on every change."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.records = json.loads(path.read_text()) if path.exists() else {}

    def update(self, name, record):
        self.records[name] = record
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".records-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.records, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)


def record_of(event):
    """The record of a `tern.failover.succeeded` event: the VM's name and where it runs now."""
    vm = event.get_data()["vm"]
    resource = vm.get("resource", {})
    name = vm.get("vm", {}).get("name") or event.get_subject()
    return name, {
        "arm_id": resource.get("arm_id", ""),
        "region": resource.get("region", ""),
        "resource_group": resource.get("resource_group", ""),
        "private_ips": resource.get("private_ips", []),
        "plan_id": event.get_extension("ternplan"),
        "event_id": event.get_id(),
        "time": event.get_time().isoformat() if event.get_time() else None,
    }


def connection_settings(args):
    url, credentials = args.nats_url, args.credentials
    if args.endpoints:
        endpoints = json.loads(pathlib.Path(args.endpoints).read_text())
        url = url or endpoints["nats_url"]
        credentials = credentials or endpoints.get("nats_credentials")
    if not url:
        raise SystemExit("no NATS URL: pass --endpoints FILE (from `tern up`) or --nats-url URL")
    options = {"servers": [url], "inbox_prefix": INBOX_PREFIX, "name": "dns-switcher-example"}
    if credentials:
        text = pathlib.Path(credentials).read_text()
        key = "user_credentials" if "BEGIN NATS USER JWT" in text else "nkeys_seed"
        options[key] = credentials
    return options


async def run(args):
    schemas = SchemaBook(pathlib.Path(args.schemas))
    records = Records(pathlib.Path(args.records))
    nc = await nats.connect(**connection_settings(args))
    js = nc.jetstream()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failures = []

    async def on_message(msg):
        try:
            headers = dict(msg.headers or {})
            event = from_binary_event(HTTPMessage(headers=headers, body=msg.data))
            if event.get_datacontenttype() != "application/json":
                raise ValueError(f"content-type {event.get_datacontenttype()!r} on the JSON mirror")
            schemas.check(event.get_dataschema(), event.get_data())
            print(f"{event.get_type()} {event.get_subject()}", flush=True)
            if event.get_type() == "tern.failover.succeeded":
                name, record = record_of(event)
                records.update(name, record)
                print(f"{name}: {record['arm_id'] or '(no ARM id yet)'} in {record['region'] or '?'}", flush=True)
        except Exception as e:  # one bad event is reported, the consumer goes on
            failures.append(str(e))
            print(f"event on {msg.subject} refused: {e}", file=sys.stderr, flush=True)

    await js.subscribe(
        JSON_SUBJECTS,
        stream=JSON_STREAM,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    print(f"reading {JSON_SUBJECTS} (stream {JSON_STREAM}); records in {records.path}", flush=True)
    await stop.wait()
    await nc.drain()
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", help="endpoints.json of a `tern up` stack")
    parser.add_argument("--nats-url", help="NATS server URL (overrides --endpoints)")
    parser.add_argument("--credentials", help="the events-reader's nkey seed or .creds file")
    parser.add_argument("--records", default="records.json", help="the record file to keep (JSON)")
    parser.add_argument("--schemas", default=str(DEFAULT_SCHEMAS), help="directory of the event schemas")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
