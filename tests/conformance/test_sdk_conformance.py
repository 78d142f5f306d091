"""Conformance: Azure's official Python SDK, unchanged, against tern-asr-sim.

What it proves: azure-mgmt-recoveryservicessiterecovery (pinned in tools/requirements.txt, default
api-version 2025-08-01) can discover the vault topology, read a protected item and its recovery points, and
drive A2A unplanned failover -> commit -> switch protection (reprotect) to completion through the SDK's own
LRO pollers (ARMPolling), against the simulator over HTTPS with a bearer token.

How to run (CI must run it, so a missing binary is a failure, not a skip):
    TERN_ASR_SIM_BIN=target/debug/tern-asr-sim .tools/venv/bin/python -m pytest tests/conformance -v

SDK facts this relies on (sources in SDK_NOTES.md next to this file):
- azure-core refuses bearer auth on non-https URLs, so the simulator serves TLS with a self-signed
  certificate; the client trusts it with `connection_verify=<cert.pem>` (RequestsTransport -> requests `verify`).
- `polling_interval=0` removes the SDK's own delay between LRO polls; a `Retry-After` header on a poll
  response still wins, so with --zero-latency the simulator must send `Retry-After: 0` (or none).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.recoveryservicessiterecovery import SiteRecoveryManagementClient
from azure.mgmt.recoveryservicessiterecovery.models import (
    A2ARecoveryPointDetails,
    A2ASwitchProtectionInput,
    A2AUnplannedFailoverInput,
    A2AVmManagedDiskInputDetails,
    Fabric,
    Job,
    ProtectionContainer,
    RecoveryPoint,
    ReplicationProtectedItem,
    SwitchProtectionInput,
    SwitchProtectionInputProperties,
    SwitchProtectionJobDetails,
    UnplannedFailoverInput,
    UnplannedFailoverInputProperties,
)

SIM_BIN_ENV = "TERN_ASR_SIM_BIN"
API_VERSION = "2025-08-01"
STARTUP_TIMEOUT_S = 60.0
# Bound on each LRO. The simulator runs with --zero-latency, so any LRO taking this long means the poller is
# stuck (e.g. a Retry-After > 0, a 202 that never turns 200, or a status that is never terminal).
LRO_TIMEOUT_S = 60.0
HANDSHAKE_KEYS = ("url", "subscription_id", "resource_group", "vault", "ca_cert")

# .../replicationFabrics/{f}/replicationProtectionContainers/{c}/replicationProtectedItems/{i}, any case.
_RPI_ID = re.compile(
    r"/replicationFabrics/(?P<fabric>[^/]+)/replicationProtectionContainers/(?P<container>[^/]+)"
    r"/replicationProtectedItems/(?P<item>[^/?]+)",
    re.IGNORECASE,
)
_CONTAINER_ID = re.compile(
    r"/replicationFabrics/(?P<fabric>[^/]+)/replicationProtectionContainers/(?P<container>[^/?]+)$",
    re.IGNORECASE,
)
_RG_ID = re.compile(r"^(?P<rg>/subscriptions/[^/]+/resourceGroups/[^/]+)", re.IGNORECASE)


class StaticTokenCredential:
    """Minimal azure.core TokenCredential: the simulator accepts any non-empty bearer token.

    Only `get_token` is defined on purpose: BearerTokenCredentialPolicy calls `get_token_info` when it exists,
    else `get_token(*scopes, **kwargs)` (azure/core/pipeline/policies/_authentication.py:_get_token).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken("tern-conformance-token", int(time.time()) + 3600)


@dataclass
class Sim:
    proc: subprocess.Popen
    stderr_path: Path
    url: str
    subscription_id: str
    resource_group: str
    vault: str
    ca_cert: str
    # Location -> ARM id of that region's cache storage account (the ready line's cache_storage_accounts).
    cache_storage_accounts: dict[str, str] = field(default_factory=dict)
    exchanges: list[dict] = field(default_factory=list)  # every HTTP response the SDK saw (via raw_response_hook)

    def stderr_tail(self, limit: int = 20000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError as exc:  # pragma: no cover - diagnostics only
            return f"<cannot read {self.stderr_path}: {exc}>"
        return text[-limit:]

    @contextlib.contextmanager
    def diagnostics(self) -> Iterator[None]:
        """On any failure, print the simulator's stderr and the last HTTP exchanges (pytest shows them)."""
        try:
            yield
        except BaseException:
            print(f"\n===== tern-asr-sim stderr ({self.stderr_path}), last 20000 chars =====")
            print(self.stderr_tail())
            print("===== last HTTP exchanges seen by the SDK =====")
            for ex in self.exchanges[-15:]:
                print(json.dumps(ex, default=str))
            if self.proc.poll() is not None:
                print(f"===== tern-asr-sim exited with code {self.proc.returncode} =====")
            raise

    def record(self, pipeline_response: Any) -> None:
        req = pipeline_response.http_request
        resp = pipeline_response.http_response
        self.exchanges.append(
            {
                "method": req.method,
                "url": req.url,
                "status": resp.status_code,
                "headers": {k: v for k, v in resp.headers.items()
                            if k.lower() in ("location", "azure-asyncoperation", "retry-after",
                                             "content-type", "x-ms-request-id")},
            }
        )


def _start_sim(binary: str, workdir: Path) -> Sim:
    tls_dir = workdir / "tls"
    tls_dir.mkdir()
    stdout_path = workdir / "sim.stdout"
    stderr_path = workdir / "sim.stderr"
    cmd = [binary, "--listen", "127.0.0.1:0", "--seed-vms", "3", "--seed-state", "ready-for-failback",
           "--tls-dir", str(tls_dir), "--zero-latency"]
    # Files rather than pipes: nothing can block the simulator on a full pipe, and stderr survives for diagnosis.
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)

    def fail(why: str) -> None:
        _stop(proc)
        pytest.fail(f"tern-asr-sim did not start: {why}\ncommand: {' '.join(cmd)}\n"
                    f"--- stdout ---\n{stdout_path.read_text(errors='replace')[-4000:]}\n"
                    f"--- stderr ---\n{stderr_path.read_text(errors='replace')[-8000:]}", pytrace=False)

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    line = ""
    while True:
        text = stdout_path.read_text(errors="replace")
        if "\n" in text:
            line = text.split("\n", 1)[0].strip()
            break
        if proc.poll() is not None:
            fail(f"process exited with code {proc.returncode} before printing its ready line")
        if time.monotonic() > deadline:
            fail(f"no ready line on stdout within {STARTUP_TIMEOUT_S:.0f}s")
        time.sleep(0.05)

    try:
        info = json.loads(line)
    except ValueError:
        fail(f"first stdout line is not JSON: {line!r}")
    missing = [k for k in HANDSHAKE_KEYS if not info.get(k)]
    if missing:
        fail(f"ready line lacks {missing}: {line!r}")
    if not str(info["url"]).startswith("https://"):
        fail(f"url must be https (azure-core refuses bearer tokens over http): {info['url']!r}")
    if not Path(info["ca_cert"]).is_file():
        fail(f"ca_cert {info['ca_cert']!r} is not a file")
    caches = info.get("cache_storage_accounts")
    if not isinstance(caches, dict) or len(caches) != 2:
        fail(f"ready line lacks a cache storage account per region: {line!r}")
    return Sim(proc=proc, stderr_path=stderr_path, url=info["url"].rstrip("/"),
               subscription_id=info["subscription_id"], resource_group=info["resource_group"],
               vault=info["vault"], ca_cert=info["ca_cert"], cache_storage_accounts=caches)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    binary = os.environ.get(SIM_BIN_ENV)
    if not binary:
        pytest.fail(f"{SIM_BIN_ENV} is not set: point it at the tern-asr-sim binary "
                    f"(e.g. `cargo build -p tern-asr-sim` then {SIM_BIN_ENV}=target/debug/tern-asr-sim). "
                    "This suite is not skippable: CI must run it.", pytrace=False)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"{SIM_BIN_ENV}={binary!r} is not an executable file", pytrace=False)
    s = _start_sim(binary, tmp_path_factory.mktemp("asr-sim"))
    try:
        yield s
    finally:
        _stop(s.proc)


@pytest.fixture(scope="module")
def client(sim: Sim) -> Iterator[SiteRecoveryManagementClient]:
    c = SiteRecoveryManagementClient(
        credential=StaticTokenCredential(),
        subscription_id=sim.subscription_id,
        base_url=sim.url,
        connection_verify=sim.ca_cert,   # trust the simulator's self-signed cert (requests `verify=`)
        use_env_settings=False,          # no proxy / REQUESTS_CA_BUNDLE from the environment
        polling_interval=0,              # default LRO delay; the per-call kwarg below says the same
        retry_total=0,                   # surface the first 5xx/429 instead of retrying with backoff
        raw_response_hook=sim.record,    # every response, including LRO polls, for assertions/diagnostics
    )
    with c:
        yield c


def _wait(poller: Any, what: str) -> Any:
    poller.wait(timeout=LRO_TIMEOUT_S)
    assert poller.done(), (
        f"{what}: LRO not finished after {LRO_TIMEOUT_S:.0f}s with --zero-latency (status {poller.status()!r}). "
        "Check: Retry-After on poll responses must be 0 or absent; the Location URL must turn 202 -> 200; "
        "an Azure-AsyncOperation body must reach a terminal `status` (Succeeded/Failed/Canceled).")
    return poller.result()


def _rpi_parts(rpi_id: str) -> dict:
    m = _RPI_ID.search(rpi_id or "")
    assert m, f"not a replication protected item ARM id: {rpi_id!r}"
    return m.groupdict()


def _vault_items(client: SiteRecoveryManagementClient, sim: Sim) -> list[tuple[str, str, ReplicationProtectedItem]]:
    rg, vault = sim.resource_group, sim.vault
    found = []
    for fabric in client.replication_fabrics.list(rg, vault):
        for container in client.replication_protection_containers.list_by_replication_fabrics(rg, vault, fabric.name):
            for item in client.replication_protected_items.list_by_replication_protection_containers(
                    rg, vault, fabric.name, container.name):
                found.append((fabric.name, container.name, item))
    return found


def _job_name_from_initial(sim: Sim, since: int, what: str) -> str:
    """Job name of an LRO from its initial response, the way Az PowerShell finds it
    (GetJobIdFromReponseLocation): the segment after `operationresults/` in Location; else the job ARM id the
    real service puts in x-ms-request-id; else the last segment of the Azure-AsyncOperation URL."""
    initial = next((ex for ex in sim.exchanges[since:] if ex["method"] == "POST"), None)
    assert initial is not None, f"{what}: no POST recorded"
    headers = {k.lower(): v for k, v in initial["headers"].items()}
    loc = headers.get("location", "")
    m = re.search(r"/operationresults/([^/?]+)", loc, re.IGNORECASE)
    if m:
        return m.group(1)
    rid = headers.get("x-ms-request-id", "")
    m = re.search(r"/replicationJobs/([^/?,\s]+)", rid, re.IGNORECASE)
    if m:
        return m.group(1)
    aao = headers.get("azure-asyncoperation", "")
    m = re.search(r"/replicationOperationStatus/([^/?]+)", aao, re.IGNORECASE)
    assert m, (f"{what}: cannot find the job id in the initial response (status {initial['status']}, "
               f"Location {loc!r}, x-ms-request-id {rid!r}, Azure-AsyncOperation {aao!r})")
    return m.group(1)


def test_handshake_and_sdk_defaults(sim: Sim, client: SiteRecoveryManagementClient) -> None:
    with sim.diagnostics():
        assert client._config.api_version == API_VERSION  # pinned SDK's default; guards an accidental bump
        fabrics = list(client.replication_fabrics.list(sim.resource_group, sim.vault))
        assert fabrics, "no fabrics listed"
        assert all(isinstance(f, Fabric) and f.name and f.id for f in fabrics)
        names = sorted(f.name for f in fabrics)
        assert len(names) >= 2 and all(n.startswith("asr-a2a-default-") for n in names), names
        gets = [ex for ex in sim.exchanges if ex["method"] == "GET"]
        assert gets and all(f"api-version={API_VERSION}" in ex["url"] for ex in gets)


def test_discovery_and_reads(sim: Sim, client: SiteRecoveryManagementClient) -> None:
    with sim.diagnostics():
        rg, vault = sim.resource_group, sim.vault
        items = _vault_items(client, sim)
        assert len(items) == 3, f"--seed-vms 3 should give 3 protected items, got {[i.name for _, _, i in items]}"
        for fabric, container, item in items:
            assert isinstance(item, ReplicationProtectedItem) and item.properties is not None
            parts = _rpi_parts(item.id)
            assert (parts["fabric"].lower(), parts["container"].lower(), parts["item"].lower()) == \
                (fabric.lower(), container.lower(), item.name.lower()), f"id {item.id!r} vs its listing path"
            p = item.properties
            assert p.protection_state == "Protected", (item.name, p.protection_state)
            assert p.active_location == "Primary", (item.name, p.active_location)
            assert "UnplannedFailover" in (p.allowed_operations or []), (item.name, p.allowed_operations)
            assert p.provider_specific_details is not None and p.provider_specific_details.instance_type == "A2A"

        fabric, container, listed = sorted(items, key=lambda t: t[2].name)[0]
        got = client.replication_protected_items.get(rg, vault, fabric, container, listed.name)
        assert isinstance(got, ReplicationProtectedItem)
        assert got.id.lower() == listed.id.lower() and got.name == listed.name
        assert got.properties.policy_id, "policyId is needed for switch protection"

        points = list(client.recovery_points.list_by_replication_protected_items(
            rg, vault, fabric, container, listed.name))
        assert len(points) >= 1, "expected at least one recovery point before failover"
        for rp in points:
            assert isinstance(rp, RecoveryPoint) and rp.id and rp.name and rp.properties is not None
            assert rp.properties.recovery_point_time is not None  # forces RFC 3339 parsing
            details = rp.properties.provider_specific_details
            assert isinstance(details, A2ARecoveryPointDetails), type(details)
            assert details.instance_type == "A2A"
            assert isinstance(details.disks, list) and details.disks, f"A2A recovery point without disks: {rp.id}"

        # ARM error envelope: the SDK parses {"error": {"code", "message"}} into HttpResponseError.error.
        with pytest.raises(HttpResponseError) as err:
            client.replication_protected_items.get(rg, vault, fabric, container, "tern-conformance-no-such-item")
        assert err.value.status_code in (400, 404), err.value.status_code
        assert err.value.error is not None and err.value.error.code, \
            f"error body not in ARM shape {{'error': {{'code','message'}}}}: {err.value.message!r}"


def test_failover_commit_reprotect(sim: Sim, client: SiteRecoveryManagementClient) -> None:
    with sim.diagnostics():
        rg, vault = sim.resource_group, sim.vault
        candidates = sorted(
            (t for t in _vault_items(client, sim)
             if "UnplannedFailover" in (t[2].properties.allowed_operations or [])),
            key=lambda t: t[2].name)
        assert candidates, "no protected item allows UnplannedFailover"
        fabric, container, item = candidates[0]
        name = item.name
        before = client.replication_protected_items.get(rg, vault, fabric, container, name)
        policy_id = before.properties.policy_id
        container_id = re.sub(r"/replicationProtectedItems/[^/]+$", "", before.id, flags=re.IGNORECASE)
        assert _CONTAINER_ID.search(container_id), container_id

        # 1. Unplanned failover, through the SDK's own poller.
        mark = len(sim.exchanges)
        poller = client.replication_protected_items.begin_unplanned_failover(
            rg, vault, fabric, container, name,
            UnplannedFailoverInput(properties=UnplannedFailoverInputProperties(
                failover_direction="PrimaryToRecovery",
                source_site_operations="Required",
                provider_specific_details=A2AUnplannedFailoverInput(recovery_point_id=None),
            )),
            polling_interval=0,
        )
        failed_over = _wait(poller, "unplanned failover")
        assert isinstance(failed_over, ReplicationProtectedItem) and failed_over.properties is not None, (
            f"unplanned failover LRO result is {failed_over!r}: the final response (Location GET) must carry "
            "the ReplicationProtectedItem body")
        assert failed_over.name == name and failed_over.id.lower() == before.id.lower()
        fp = failed_over.properties
        assert fp.active_location == "Recovery", fp.active_location
        assert fp.protection_state != "Protected", fp.protection_state
        assert "Commit" in (fp.allowed_operations or []), fp.allowed_operations
        failover_job = client.replication_jobs.get(rg, vault, _job_name_from_initial(sim, mark, "unplanned failover"))
        assert isinstance(failover_job, Job) and failover_job.properties.state == "Succeeded", failover_job

        reread = client.replication_protected_items.get(rg, vault, fabric, container, name)
        assert reread.properties.protection_state == fp.protection_state
        assert reread.properties.active_location == "Recovery"

        # 2. Commit (POST with no body).
        committed = _wait(client.replication_protected_items.begin_failover_commit(
            rg, vault, fabric, container, name, polling_interval=0), "failover commit")
        assert isinstance(committed, ReplicationProtectedItem) and committed.properties is not None, committed
        cp = committed.properties
        assert cp.protection_state == "UnplannedFailoverCommitted", cp.protection_state
        assert cp.active_location == "Recovery", cp.active_location
        assert "SwitchProtection" in (cp.allowed_operations or []), cp.allowed_operations

        # 3. Reprotect = switch protection on the item's current container (what Az PowerShell does for A2A,
        #    A2AReprotectTest.json entries 13-16): one vmManagedDisks entry per disk of the VM that runs now (the
        #    committed item's recoveryTargetDiskIds), the cache storage account of the region it runs in, the
        #    resource group of the VM it came from, the item's policy and container. The simulator refuses less.
        psd = committed.properties.provider_specific_details
        source_vm = getattr(psd, "fabric_object_id", None) or ""
        m = _RG_ID.match(source_vm)
        recovery_rg = m.group("rg") if m else f"/subscriptions/{sim.subscription_id}/resourceGroups/{rg}"
        running_location = psd.recovery_fabric_location
        staging = sim.cache_storage_accounts.get(running_location)
        assert staging, f"no cache storage account for {running_location!r}: {sim.cache_storage_accounts}"
        disks = psd.protected_managed_disks or []
        assert disks and all(d.recovery_target_disk_id for d in disks), (
            "a committed item names the disks of the VM that runs now in recoveryTargetDiskId: "
            f"{[d.as_dict() for d in disks]}")
        vm_managed_disks = [
            A2AVmManagedDiskInputDetails(
                disk_id=d.recovery_target_disk_id,
                primary_staging_azure_storage_account_id=staging,
                recovery_resource_group_id=recovery_rg,
                recovery_replica_disk_account_type=d.recovery_replica_disk_account_type,
                recovery_target_disk_account_type=d.recovery_target_disk_account_type,
            )
            for d in disks
        ]
        mark = len(sim.exchanges)
        poller = client.replication_protection_containers.begin_switch_protection(
            rg, vault, fabric, container,
            SwitchProtectionInput(properties=SwitchProtectionInputProperties(
                replication_protected_item_name=name,
                provider_specific_details=A2ASwitchProtectionInput(
                    recovery_container_id=container_id,
                    policy_id=policy_id,
                    recovery_resource_group_id=recovery_rg,
                    vm_managed_disks=vm_managed_disks,
                    vm_disks=[],
                ),
            )),
            polling_interval=0,
        )
        switched = _wait(poller, "switch protection")
        assert isinstance(switched, ProtectionContainer) and switched.id, (
            f"switch protection LRO result is {switched!r}: the final response must carry a ProtectionContainer")

        job_name = _job_name_from_initial(sim, mark, "switch protection")
        job = client.replication_jobs.get(rg, vault, job_name)
        assert isinstance(job, Job) and job.name == job_name, job
        assert job.properties.state == "Succeeded", job.properties.state
        details = job.properties.custom_details
        assert isinstance(details, SwitchProtectionJobDetails), type(details)
        new_id = details.new_replication_protected_item_id
        assert new_id, "SwitchProtectionJobDetails.newReplicationProtectedItemId not set"
        assert any(j.name == job_name for j in client.replication_jobs.list(rg, vault)), \
            f"job {job_name} missing from replicationJobs list"

        # 4. The item now lives under the other fabric/container, same name, Protected again (with --zero-latency
        #    initial replication and its two completion jobs are over at once).
        new = _rpi_parts(new_id)
        assert new["item"] == name, new_id
        assert new["fabric"].lower() != fabric.lower(), f"item did not move fabric: {new_id}"
        # The spec example (ReplicationProtectionContainers_SwitchProtection.json) POSTs on one container and
        # returns the other: the container the item now lives in.
        got_container = _CONTAINER_ID.search(switched.id)
        assert got_container and \
            (got_container["fabric"].lower(), got_container["container"].lower()) == \
            (new["fabric"].lower(), new["container"].lower()), (
                f"switch protection returned container {switched.id!r}; expected the item's new container "
                f"{new['fabric']}/{new['container']}")
        moved = client.replication_protected_items.get(rg, vault, new["fabric"], new["container"], name)
        assert _rpi_parts(moved.id) == new, f"GET at the new id returned id {moved.id!r}"
        assert moved.properties.protection_state == "Protected", moved.properties.protection_state
        assert "UnplannedFailover" in (moved.properties.allowed_operations or []), moved.properties.allowed_operations

        old_names = [i.name for i in client.replication_protected_items.list_by_replication_protection_containers(
            rg, vault, fabric, container)]
        new_names = [i.name for i in client.replication_protected_items.list_by_replication_protection_containers(
            rg, vault, new["fabric"], new["container"])]
        assert name not in old_names, f"{name} still listed under the old container {fabric}/{container}"
        assert name in new_names, f"{name} not listed under the new container {new['fabric']}/{new['container']}"
