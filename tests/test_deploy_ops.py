"""Running it in production: the Kubernetes manifests (validated offline against the Kubernetes
schemas by kubernetes-validate, every command a real entry point), the hardened compose file and
systemd units, Prometheus's scrape targets, and the Grafana dashboard (every metric it queries
is one the service exposes, every SQL query runs against the contract views)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector
from sqlalchemy import insert, text

from bench import promql
from bench.throughput.config import LEAN_WORKER
from tests.deploy_files import (
    CELERY_BASE,
    DEPLOY,
    Command,
    commands,
    compose,
    example_settings,
    problems,
    unit,
)
from worker.db.clock import db_epoch
from worker.db.models import SERVICE_BEATS
from worker.db.session import Database
from worker.dbmetrics import DatabaseCollector
from worker.metrics import instruments
from worker.preflight import placeholder_problems

K8S = DEPLOY / "k8s"
INBOX_CRONJOB = K8S / "inbox-cronjob"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "enos-import.json"
KUBERNETES_VERSION = "1.32.0"


# --- Kubernetes -------------------------------------------------------------------------------


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, with its namespace and labels applied (the only
    transformers the manifests use; anything else in kustomization.yaml fails here)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "labels", "resources"}
    assert set(spec) <= known, f"{folder}: kustomize features beyond {known}"
    docs = []
    for name in spec["resources"]:
        for doc in yaml.safe_load_all((folder / name).read_text()):
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = spec["namespace"]
            for entry in spec.get("labels", []):
                doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
            docs.append(doc)
    return docs


def resources() -> list[dict[str, Any]]:
    return kustomize(K8S)


def by_kind(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def k8s_commands(docs: list[dict[str, Any]]) -> list[Command]:
    found = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job", "CronJob"):
            continue
        for container in pod_spec(doc)["containers"]:
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            found.append(Command(where, tuple(container["command"])))
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "exec" in container.get(probe, {}):
                    argv = tuple(container[probe]["exec"]["command"])
                    found.append(Command(f"{where}.{probe}", argv))
    return found


def test_every_deployed_worker_runs_without_gossip_mingle_and_heartbeats() -> None:
    """Nothing reads them and they cost CPU all the time (deploy/README.md); the bench runs its
    workers with the same options, so that it measures what is deployed."""
    base = CELERY_BASE["worker"]
    workers = [
        c
        for c in [*commands(), *k8s_commands(resources())]
        if (Path(c.argv[0]).name, *c.argv[1:4]) == base
    ]
    where = sorted(c.where.split(":")[0].split("/")[0] for c in workers)
    assert where == ["Deployment", "Dockerfile", "docker-compose.yml", "enos-import-worker.service"]
    for command in workers:
        assert set(LEAN_WORKER) <= set(command.argv), command.where


def test_every_listed_manifest_is_in_the_folder_and_vice_versa() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


@pytest.mark.parametrize(
    "path",
    sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"),
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_mistakes() -> None:
    doc = by_kind("Deployment", "enos-import-worker")
    doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 330  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


K8S_COMMANDS = k8s_commands(resources())


@pytest.mark.parametrize("command", K8S_COMMANDS, ids=[c.where for c in K8S_COMMANDS])
def test_k8s_command_exists_with_its_options(command: Command) -> None:
    assert problems(command.argv) == [], " ".join(command.argv)


def test_inbox_cronjob_command_exists() -> None:
    for command in k8s_commands(kustomize(INBOX_CRONJOB)):
        assert problems(command.argv) == [], " ".join(command.argv)


def test_k8s_rules() -> None:
    settings = example_settings()
    config = by_kind("ConfigMap", "enos-import")["data"]
    worker = by_kind("Deployment", "enos-import-worker")
    spec = pod_spec(worker)
    grace = spec["terminationGracePeriodSeconds"]
    # Longer than the longest call plus its commit, and than the lease bounding any attempt.
    assert grace > float(config["ENOS_IMPORT_READ_TIMEOUT_S"]) + 30
    assert grace > float(config["ENOS_IMPORT_LEASE_S"]) >= settings.lease_s
    container = spec["containers"][0]
    assert container["readinessProbe"]["exec"]["command"][:2] == ["enos-import", "health"]
    assert container["livenessProbe"]["exec"]["command"][:2] == ["enos-import", "health"]
    ports = [p["containerPort"] for p in container["ports"]]
    assert ports == [int(config["ENOS_IMPORT_METRICS_PORT"])]

    beat = by_kind("Deployment", "enos-import-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    beats = [c for c in K8S_COMMANDS if c.argv[:4] == ("celery", "-A", "worker.celery_app", "beat")]
    assert [c.where for c in beats] == ["Deployment/enos-import-beat/beat"]

    pdb = by_kind("PodDisruptionBudget", "enos-import-worker")
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    migrate = by_kind("Job", "enos-import-migrate")
    assert pod_spec(migrate)["containers"][0]["command"] == ["enos-import", "db", "upgrade"]


def test_k8s_pods_are_hardened_and_read_credentials_from_the_secret() -> None:
    docs = [*resources(), *kustomize(INBOX_CRONJOB)]
    pods = [d for d in docs if d["kind"] in ("Deployment", "Job", "CronJob")]
    assert len(pods) == 5
    for doc in pods:
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            sources = container["envFrom"]
            assert {"secretRef": {"name": "enos-import"}} in sources
            # No credential in plain sight.
            for variable in container.get("env", []):
                assert not variable["name"].endswith(("_KEY", "_URL")), variable
    config = by_kind("ConfigMap", "enos-import")["data"]
    assert not [k for k in config if k.endswith(("SECRET_KEY", "ACCESS_KEY", "DATABASE_URL"))]


# --- Compose and systemd ----------------------------------------------------------------------


def test_every_container_is_hardened() -> None:
    for name, service in compose()["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name


def test_placeholder_passwords_are_refused() -> None:
    problems_found = placeholder_problems(example_settings())
    assert problems_found == [
        "ENOS_IMPORT_DATABASE_URL holds a placeholder password",
        "ENOS_IMPORT_BROKER_URL holds a placeholder password",
        "ENOS_IMPORT_SECRET_KEY is a placeholder",
    ]
    real = example_settings().model_copy(
        update={
            "database_url": "postgresql+psycopg://enos:Xk29sPq7@db/enos_import",
            "broker_url": "redis://:Zr88wTn3@redis:6379/0",
        }
    )
    assert placeholder_problems(real) == ["ENOS_IMPORT_SECRET_KEY is a placeholder"]


@pytest.mark.parametrize("name", ["worker", "beat", "migrate", "metrics"])
def test_systemd_units_are_hardened(name: str) -> None:
    service = unit(f"enos-import-{name}.service")["Service"]
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    # The private key is only for an operator's secrets export, never for a service.
    assert "/etc/enos-import/private-key.pem" in service["InaccessiblePaths"]
    assert "ReadWritePaths" not in service  # nothing but beat's StateDirectory is written


def test_prometheus_scrapes_the_workers_and_the_metrics_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = compose()["services"]
    worker_port = int(services["worker"]["environment"]["ENOS_IMPORT_METRICS_PORT"])
    assert jobs["enos-import-workers"]["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": worker_port, "refresh_interval": "30s",
    }  # fmt: skip
    metrics_port = services["metrics"]["command"][-1]
    assert jobs["enos-import-database"]["static_configs"][0]["targets"] == [
        f"metrics:{metrics_port}"
    ]
    volumes = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


# --- Grafana ----------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def targets(source_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (panel["title"], target)
        for panel in dashboard()["panels"]
        for target in panel["targets"]
        if target["datasource"]["type"] == source_type
    ]


def exposed_names(collectors: list[Collector]) -> set[str]:
    """The sample names a scrape can show: a family's own, and its type's suffixes."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for collector in collectors:
        for family in collector.collect():
            names.add(family.name)
            names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def test_dashboard_uses_the_provisioned_data_sources() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "enos-import.yml").read_text()
    )
    uids = {(d["type"], d["uid"]) for d in provisioned["datasources"]}
    for panel in dashboard()["panels"]:
        for target in [panel, *panel["targets"]]:
            source = target["datasource"]
            assert (source["type"], source["uid"]) in uids, panel["title"]
    titles = " / ".join(p["title"] for p in dashboard()["panels"])
    for needed in ("Devices/s by outcome", "Jobs by state", "EnOS code", "Retries and 429s",
                   "Lag", "Calls in flight"):  # fmt: skip
        assert needed in titles


def test_every_dashboard_metric_is_exposed(pg_db: Database) -> None:
    instruments()  # the workers' metrics, in this process's registry
    with pg_db.begin() as session:
        now = float(session.execute(db_epoch().select()).scalar_one())
        session.execute(insert(SERVICE_BEATS).values(name="sweeper", last_run_at=now))
    database = CollectorRegistry()
    database.register(DatabaseCollector(pg_db))
    exposed = exposed_names([REGISTRY, database])
    queried = targets("prometheus")
    assert len(queried) >= 10
    for title, target in queried:
        # Parsed by the evaluator that draws the README's picture: the same queries, drawn.
        for selector in promql.selectors(promql.parse(target["expr"])):
            assert selector.metric in exposed, f"{title}: {selector.metric}"


def test_every_dashboard_sql_query_runs_on_the_views(pg_db: Database) -> None:
    queried = targets("grafana-postgresql-datasource")
    assert len(queried) >= 2
    for title, target in queried:
        sql = target["rawSql"]
        assert "import_job_status" in sql or "import_device_outcome" in sql, title
        with pg_db.read() as session:
            session.execute(text(sql)).all()  # a missing view column fails here


def test_promql_subset_refuses_what_it_cannot_draw() -> None:
    for query in ("rate(x[5m]) * 2", "sum without (a) (x)", "x offset 5m", "increase(x[1m])"):
        with pytest.raises(promql.QueryError):
            promql.parse(query)
