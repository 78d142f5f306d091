#!/usr/bin/env python3
"""A hook runner that answers Tern's `hook` gates by "updating DNS" in a JSON file.

A plan's wave may hold a `hook` step: the planner sends a core NATS request (not JetStream) to
the subject the plan names, `tern.hooks.dns-update` here, and waits for the answer with the
step's timeout and retries. This runner answers those requests as the `hooks` NATS identity. For
each VM of the request that has an ARM id it writes where the VM runs (ARM id, region, resource
group, subscription, private IPs) into a JSON file keyed by VM name, then answers
`{"ok": true, "message": "..."}`; a request it cannot read is answered `{"ok": false, ...}`.

    python dns_hook.py --endpoints .tern/endpoints.json --records dns.json

`--endpoints` is the file `tern up` writes (it names the NATS URL and, as `hooks_credentials`,
the hooks identity's nkey seed); `--nats-url` and `--credentials` (an nkey seed or a JWT .creds
file) say the same explicitly. Copies started with the same `--queue` share the requests.

The request's `hook_id` is the same for every try of one attempt: a hook id already done (kept
in `<records>.done`) is answered ok again without writing anything. The request body is the
protobuf JSON mapping of HookRequest, which leaves out every field at its default value (0, "",
empty lists), so each field is read with a default.
"""

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import signal
import sys
import tempfile

import nats

DEFAULT_SUBJECT = "tern.hooks.dns-update"
DEFAULT_QUEUE = "dns-hook"
# The hooks identity may only receive on `tern.hooks.>` and on its own inbox prefix.
INBOX_PREFIX = "_INBOX_hooks"
JSON_HEADERS = {"content-type": "application/json"}  # as Tern spells it on its own messages


def write_json(path: pathlib.Path, value):
    """Writes `value` to `path` whole and atomically (a temporary file, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Records:
    """The record file (VM name -> where it runs) and, beside it, the hook ids already done."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.done_path = path.with_name(path.name + ".done")
        self.records = json.loads(path.read_text()) if path.exists() else {}
        self.done = set(json.loads(self.done_path.read_text())) if self.done_path.exists() else set()

    def apply(self, hook_id, updates):
        """Writes `updates` into the record file, then marks `hook_id` done. A failure before the
        mark leaves the hook id not done, so the planner's next try does it again."""
        records = dict(self.records)
        records.update(updates)
        if updates:
            write_json(self.path, records)
        self.records = records
        done = self.done | {hook_id}
        write_json(self.done_path, sorted(done))
        self.done = done


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def handle(records, subject, data):
    """The answer `(ok, message)` to one request body, and a short description of the request."""
    try:
        request = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        return False, f"request is not JSON: {e}", "plan=? wave=? try=?"
    if not isinstance(request, dict):
        return False, "request is not a JSON object", "plan=? wave=? try=?"
    plan_id = request.get("plan_id", "")
    hook_id = request.get("hook_id", "")
    wave_number = request.get("wave_number", 0)
    wave = request.get("wave", "") or (str(wave_number) if wave_number else "")
    described = f"plan={plan_id or '?'} wave={wave or '?'} try={request.get('try', 0)}"
    if not plan_id or not isinstance(plan_id, str):
        return False, "request has no plan_id", described
    if not hook_id or not isinstance(hook_id, str):
        return False, "request has no hook_id", described
    vms = request.get("vms")
    if not isinstance(vms, list) or not vms:
        return False, "request has no vms list", described
    name = subject.rsplit(".", 1)[-1]
    if hook_id in records.done:
        return True, f"{name}: {hook_id} already done", described

    updates, skipped = {}, []
    updated_at = now()
    for vm in vms:
        if not isinstance(vm, dict):
            skipped.append("(not an object)")
            continue
        resource = vm.get("resource") or {}
        arm_id = resource.get("arm_id", "") if isinstance(resource, dict) else ""
        vm_name = vm.get("name", "") or (arm_id.rstrip("/").rsplit("/", 1)[-1] if arm_id else "")
        if not arm_id:
            skipped.append(vm_name or "(unnamed)")
            continue
        updates[vm_name] = {
            "arm_id": arm_id,
            "region": resource.get("region", ""),
            "resource_group": resource.get("resource_group", ""),
            "subscription_id": resource.get("subscription_id", ""),
            "private_ips": resource.get("private_ips", []),
            "plan_id": plan_id,
            "wave": wave,
            "hook_id": hook_id,
            "when": request.get("when", ""),
            "updated_at": updated_at,
        }
    try:
        records.apply(hook_id, updates)
    except OSError as e:
        return False, f"{name}: could not write {records.path}: {e}", described
    count = f"{len(updates)} record{'' if len(updates) == 1 else 's'}"
    message = f"{name}: {count} updated in {records.path}"
    if updates:
        message += f" ({', '.join(updates)})"
    if skipped:
        message += f"; skipped, no ARM id: {', '.join(skipped)}"
    return True, message, described


def connection_settings(args):
    url, credentials = args.nats_url, args.credentials
    if args.endpoints:
        endpoints = json.loads(pathlib.Path(args.endpoints).read_text())
        url = url or endpoints["nats_url"]
        # `nats_credentials` there is the events-reader's seed; the hooks identity has its own.
        credentials = credentials or endpoints.get("hooks_credentials")
    if not url:
        raise SystemExit("no NATS URL: pass --endpoints FILE (from `tern up`) or --nats-url URL")
    options = {"servers": [url], "inbox_prefix": INBOX_PREFIX, "name": "dns-hook-example"}
    if credentials:
        text = pathlib.Path(credentials).read_text()
        key = "user_credentials" if "BEGIN NATS USER JWT" in text else "nkeys_seed"
        options[key] = credentials
    return options


async def run(args):
    records = Records(pathlib.Path(args.records))
    nc = await nats.connect(**connection_settings(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def on_request(msg):
        try:
            if args.fail_with is not None:
                ok, message, described = False, args.fail_with, "(--fail-with)"
            else:
                ok, message, described = handle(records, msg.subject, msg.data)
        except Exception as e:  # one bad request is answered, the runner goes on
            ok, message, described = False, f"hook runner error: {e}", "plan=? wave=? try=?"
        print(f"{msg.subject} {described} -> {'ok' if ok else 'failed'}: {message}", flush=True)
        if not msg.reply:
            print(f"request on {msg.subject} has no reply subject: not answered", file=sys.stderr, flush=True)
            return
        body = json.dumps({"ok": ok, "message": message}).encode()
        try:
            await nc.publish(msg.reply, body, headers=JSON_HEADERS)
        except Exception as e:
            print(f"answer to {msg.subject} not sent: {e}", file=sys.stderr, flush=True)

    await nc.subscribe(args.subject, queue=args.queue, cb=on_request)
    await nc.flush()
    print(f"listening on {args.subject} (queue {args.queue}); records in {records.path}", flush=True)
    await stop.wait()
    await nc.drain()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", help="endpoints.json of a `tern up` stack")
    parser.add_argument("--nats-url", help="NATS server URL (overrides --endpoints)")
    parser.add_argument("--credentials", help="the hooks identity's nkey seed or .creds file")
    parser.add_argument("--subject", default=DEFAULT_SUBJECT, help="the subject the plan's hook names")
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="queue group shared by copies of the runner")
    parser.add_argument("--records", default="dns.json", help="the record file to keep (JSON)")
    parser.add_argument("--fail-with", metavar="MESSAGE", help="answer every request ok:false with MESSAGE")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
