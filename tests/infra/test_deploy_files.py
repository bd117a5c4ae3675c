"""The deployment files (``infra/deploy``) hold together, checked without a container
runtime (none runs in CI): an operator who starts them must not meet a command that does
not exist, a setting that is silently ignored, a probe or a scrape on a path or port no
process serves, a dashboard panel over a metric nobody exports, or a manifest kustomize
leaves out.

Everything is checked against the real thing: commands against the ``tradecore`` CLI
(``python -m api.cli ... --help`` in a subprocess, then click's own parser), settings
against ``Settings.model_fields`` and its validation, paths against the API's routes and
a real worker health server, metric names against the ``Counter(`` / ``Gauge(`` /
``Histogram(`` declarations in the product's source. Commands and metrics that other
branches of issue 11 deliver (``kafka init``, ``worker relay``, the workers' metrics) fail
here, by name, until those branches merge: nothing is allow-listed.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
import yaml
from pydantic import ValidationError

from infra.settings import PROJECT_ROOT, Settings

DEPLOY = PROJECT_ROOT / "infra" / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tradecore.json"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
PACKAGES = ("aggregates", "kernels", "streams", "inference", "projections", "api", "infra")
TRADECORE_IMAGE = "tradecore:local"
#: metrics Prometheus makes itself for every target (not exported by any process)
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


# --- reading the files --------------------------------------------------------------------

@cache
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Every Kubernetes object in the folder (kustomization.yaml aside), with its file."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return tuple(found)


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc.get("kind") == kind]


def _interpolated(value: Any) -> str:
    """A compose environment value as the container sees it with the shell unset
    (``${VAR:-default}`` -> ``default``)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", str(value))


@dataclass(frozen=True)
class Process:
    """One tradecore process the deployment files start."""

    where: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(hash=False)
    #: probes: (path, port, what) -- port None where the file does not say (compose CMD)
    probes: tuple[tuple[str, int, str], ...] = ()

    @property
    def kind(self) -> str:
        """``api`` (`tradecore serve`), ``worker`` or ``oneshot`` (anything else)."""
        if self.argv[1:2] == ("serve",):
            return "api"
        if self.argv[1:2] == ("worker",):
            return "worker"
        return "oneshot"

    def settings(self) -> Settings:
        values: dict[str, Any] = {
            name.removeprefix("TRADECORE_").lower(): value
            for name, value in self.env.items() if name.startswith("TRADECORE_")}
        return Settings(**values)

    def listening_port(self) -> int:
        settings = self.settings()
        return settings.api_port if self.kind == "api" else settings.worker_port

    def listening_host(self) -> str:
        settings = self.settings()
        return settings.api_host if self.kind == "api" else settings.worker_host


def _compose_probe(healthcheck: dict[str, Any] | None) -> tuple[tuple[str, int, str], ...]:
    if not healthcheck:
        return ()
    test = " ".join(str(part) for part in healthcheck.get("test", []))
    return tuple((path, int(port), "healthcheck") for port, path in
                 re.findall(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[A-Za-z0-9_/-]*)", test))


def compose_processes() -> list[Process]:
    return [Process(f"compose service {name!r}", tuple(service["command"]),
                    {key: _interpolated(value)
                     for key, value in (service.get("environment") or {}).items()},
                    _compose_probe(service.get("healthcheck")))
            for name, service in compose()["services"].items()
            if service.get("image") == TRADECORE_IMAGE]


def _pod_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """What ``envFrom`` and ``env`` put in a container, from the folder's objects."""
    data: dict[str, dict[str, str]] = {}
    for doc in k8s_objects("ConfigMap"):
        data[f"configMap/{doc['metadata']['name']}"] = doc.get("data", {})
    for doc in k8s_objects("Secret"):
        data[f"secret/{doc['metadata']['name']}"] = doc.get("stringData", {})
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(data.get(f"configMap/{source['configMapRef']['name']}", {}))
        if "secretRef" in source:
            env.update(data.get(f"secret/{source['secretRef']['name']}", {}))
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def _pod_specs() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file and object name, pod template metadata, pod spec) of every workload."""
    for file, doc in k8s_documents():
        if doc.get("kind") in {"Deployment", "StatefulSet", "Job"}:
            template = doc["spec"]["template"]
            yield (f"{file} {doc['kind']}/{doc['metadata']['name']}",
                   template.get("metadata", {}), template["spec"])


def _container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"probe port {port!r} is not a port of container {container['name']}"
    return int(named[port])


def k8s_processes() -> list[Process]:
    found = []
    for where, _, spec in _pod_specs():
        for container in spec["containers"]:
            if not str(container.get("image", "")).startswith("tradecore"):
                continue
            probes = tuple(
                (probe["httpGet"]["path"],
                 _container_port(container, probe["httpGet"]["port"]), kind)
                for kind in ("startupProbe", "readinessProbe", "livenessProbe")
                if (probe := container.get(kind)) and "httpGet" in probe)
            argv = tuple(container.get("command", [])) + tuple(container.get("args", []))
            found.append(Process(f"{where} container {container['name']!r}", argv,
                                 _pod_env(spec, container), probes))
    return found


def dockerfile_cmd() -> tuple[str, ...]:
    line = next(line for line in DOCKERFILE.read_text().splitlines()
                if line.startswith("CMD "))
    return tuple(json.loads(line.removeprefix("CMD ")))


def all_processes() -> list[Process]:
    return compose_processes() + k8s_processes()


# --- what the code really has -------------------------------------------------------------

def _cli_path_problem(argv: tuple[str, ...]) -> str | None:
    """Why the CLI's parser would not run ``argv`` as written, or None.

    ``--help`` alone is not enough: a command taking a free-form argument (``worker
    STAGE``) shows its help whatever the argument. So each word must be a subcommand of
    its group, the leaf's parser must accept the rest (options, enum choices), and a
    plain string argument's value must be one its help names (a stage's documented
    values).
    """
    from api.cli import app

    command: Any = typer.main.get_command(app)
    words = list(argv[1:])
    path = ["tradecore"]
    while isinstance(command, typer.core.TyperGroup) and words \
            and not words[0].startswith("-"):
        sub = command.commands.get(words[0])
        if sub is None:
            return f"`{' '.join(path)}` has no command {words[0]!r}"
        path.append(words.pop(0))
        command = sub
    if isinstance(command, typer.core.TyperGroup):
        return f"`{' '.join(path)}` is a group: it needs a command"
    try:
        context = command.make_context(" ".join(path), list(words))
    except typer.TyperException as err:
        return f"`{' '.join(argv)}`: {err}"
    for param in command.params:
        if not isinstance(param, typer.core.TyperArgument):
            continue
        value = context.params.get(param.name or "")
        help_text = param.help or ""
        if isinstance(value, str) and not isinstance(value, Enum) \
                and not re.search(rf"\b{re.escape(value)}\b", help_text):
            return (f"`{' '.join(path)}` does not name {value!r} among the values of its "
                    f"{param.name} argument ({help_text!r})")
    return None


def _worker_paths() -> dict[str, int]:
    """Status of each probe path on a real worker health server (streams.worker)."""
    from streams.worker import health_server

    class Standby:
        """A runnable doing nothing: the paths are the server's, whatever it runs."""

        name = "standby"

        def run(self, stop: threading.Event) -> None:
            stop.wait()

        def health(self) -> dict[str, Any]:
            return {"ready": False, "reason": "standby"}

    server = health_server(Standby(), "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        statuses = {}
        for path in ("/healthz", "/readyz", "/metrics", "/no-such-path"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    statuses[path] = r.status
            except urllib.error.HTTPError as err:
                statuses[path] = err.code
        return statuses
    finally:
        server.shutdown()
        server.server_close()


@cache
def served_paths(kind: str) -> frozenset[str]:
    """The GET paths a ``tradecore serve`` (api) or ``tradecore worker`` process answers."""
    if kind == "api":
        import tempfile

        from fastapi.routing import APIRoute

        from api.http import create_app

        with tempfile.TemporaryDirectory() as folder:
            app = create_app(Settings(jwt_keys_path=Path(folder) / "jwt-keys.json"))
        return frozenset(route.path for route in app.routes
                         if isinstance(route, APIRoute) and "GET" in (route.methods or ()))
    statuses = _worker_paths()
    assert statuses.pop("/no-such-path") == 404, "the worker server answers anything"
    return frozenset(path for path, status in statuses.items() if status != 404)


@dataclass(frozen=True)
class Declared:
    name: str
    kind: str
    labels: frozenset[str]
    where: str

    def series(self) -> set[str]:
        """The sample names prometheus_client exports for it."""
        if self.kind == "Counter":
            base = self.name.removesuffix("_total")
            return {f"{base}_total", f"{base}_created"}
        if self.kind == "Histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count",
                    f"{self.name}_created"}
        if self.kind == "Summary":
            return {self.name, f"{self.name}_sum", f"{self.name}_count", f"{self.name}_created"}
        if self.kind == "Info":
            return {f"{self.name}_info"}
        return {self.name}


METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def _strings(node: ast.AST | None) -> list[str] | None:
    if isinstance(node, ast.List | ast.Tuple):
        values = [item.value for item in node.elts if isinstance(item, ast.Constant)]
        return [value for value in values if isinstance(value, str)]
    return None


@cache
def declared_metrics() -> dict[str, Declared]:
    """Every Prometheus metric the product's source declares with a literal name (the
    house style: ``Counter("tradecore_x_total", "what it counts", ["label"])``)."""
    found: dict[str, Declared] = {}
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            # `from prometheus_client import Counter as Metric` (streams/loop.py, where
            # `Counter` is collections.Counter): the alias declares a Counter
            aliases = {alias.asname: alias.name for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client"
                       for alias in node.names if alias.asname}
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = (func.attr if isinstance(func, ast.Attribute)
                        else func.id if isinstance(func, ast.Name) else "")
                kind = aliases.get(kind, kind)
                keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
                name_node = node.args[0] if node.args else keywords.get("name")
                has_doc = len(node.args) >= 2 or "documentation" in keywords
                if (kind not in METRIC_CLASSES or not has_doc
                        or not isinstance(name_node, ast.Constant)
                        or not isinstance(name_node.value, str)):
                    continue
                labels = _strings(node.args[2] if len(node.args) > 2
                                  else keywords.get("labelnames")) or []
                name = name_node.value
                found[name] = Declared(name, kind, frozenset(labels),
                                       f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    return found


def exported_series() -> dict[str, Declared]:
    return {series: metric for metric in declared_metrics().values()
            for series in metric.series()}


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "and", "or", "unless"}


@dataclass(frozen=True)
class Query:
    panel: str
    expr: str

    def _bare(self) -> str:
        return re.sub(r'"(?:\\.|[^"\\])*"', '""', self.expr)  # string literals out

    def metrics(self) -> set[str]:
        text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", self._bare())
        text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
                      " ", text)
        return {m.group(1) for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text)
                if not m.group(2) and m.group(1) not in PROMQL_WORDS}

    def labels(self) -> set[str]:
        bare = self._bare()
        names = set()
        for selector in re.findall(r"\{([^}]*)\}", bare):
            names |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", selector))
        for grouping in re.findall(
                r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", bare):
            names |= {label.strip() for label in grouping.split(",") if label.strip()}
        return names


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel.get("type") != "row"]


def dashboard_queries() -> list[Query]:
    return [Query(panel["title"], target["expr"]) for panel in dashboard_panels()
            for target in panel.get("targets", [])]


# --- the tests ----------------------------------------------------------------------------

def test_every_file_parses() -> None:
    assert compose()["services"]
    assert yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    for path in sorted(GRAFANA.rglob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    assert dashboard()["panels"]
    assert k8s_documents()
    for file, doc in k8s_documents():
        for key in ("apiVersion", "kind"):
            assert doc.get(key), f"{file}: an object without {key}"
        assert doc.get("metadata", {}).get("name"), f"{file}: a {doc['kind']} without a name"


def _commands() -> list[tuple[str, ...]]:
    argvs = {process.argv: None for process in compose_processes() + k8s_processes()}
    argvs[dockerfile_cmd()] = None
    return list(argvs)


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_command_is_a_real_tradecore_command(argv: tuple[str, ...]) -> None:
    assert argv[0] == "tradecore", f"{argv}: the image's entry point is `tradecore`"
    ran = subprocess.run([sys.executable, "-m", "api.cli", *argv[1:], "--help"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin",
                              "COLUMNS": "200"})
    assert ran.returncode == 0, (
        f"`{' '.join(argv)} --help` exited {ran.returncode}:\n{ran.stdout}{ran.stderr}")
    assert (problem := _cli_path_problem(argv)) is None, problem


def test_the_deployment_runs_each_worker_the_api_and_the_setup() -> None:
    """What issues 11 and 12 ask the deployment for, in both compose and Kubernetes."""
    wanted = {("tradecore", "kafka", "init"), ("tradecore", "db", "upgrade"),
              ("tradecore", "serve", "--distributed")} | {
        ("tradecore", "worker", name)
        for name in ("relay", "matching", "saga", "projections", "streams")}
    for processes, where in ((compose_processes(), "compose"), (k8s_processes(), "k8s")):
        assert wanted <= {p.argv for p in processes}, (
            f"{where} lacks {sorted(wanted - {p.argv for p in processes})}")


def _setting_names(text: str) -> set[str]:
    return set(re.findall(r"\bTRADECORE_[A-Z0-9_]*[A-Z0-9]\b", text))


@pytest.mark.parametrize("path", [COMPOSE, DOCKERFILE, *sorted(K8S.glob("*.yaml"))],
                         ids=lambda path: str(path.relative_to(DEPLOY)))
def test_every_setting_named_is_a_real_setting(path: Path) -> None:
    """In values, keys and comments alike: a misspelt variable is silently ignored."""
    fields = set(Settings.model_fields)
    unknown = sorted(name for name in _setting_names(path.read_text())
                     if name.removeprefix("TRADECORE_").lower() not in fields)
    assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


@pytest.mark.parametrize("process", all_processes(), ids=lambda p: p.where)
def test_every_process_gets_valid_distributed_settings(process: Process) -> None:
    try:
        settings = process.settings()
    except ValidationError as err:
        pytest.fail(f"{process.where}: {err}")
    assert settings.persistence == "postgres", process.where
    assert settings.bus == "kafka", process.where
    assert settings.kafka_dev_broker is False, f"{process.where}: Tansu workarounds on"
    if process.kind in {"api", "worker"}:
        assert process.listening_host() == "0.0.0.0", (
            f"{process.where} listens on {process.listening_host()}: probes and "
            "Prometheus from outside the container would not reach it")


#: settings every process of one deployment must share: the same store, topics, groups
#: and instrument and risk rules (a saga and a matching worker that disagree on the
#: prefix never see each other's messages; on the universe, fill at other ticks)
SHARED_SETTINGS = ("persistence", "postgres_host", "postgres_port", "postgres_user",
                   "postgres_db", "postgres_schema", "readmodel_schema", "bus",
                   "kafka_bootstrap", "kafka_topic_prefix", "kafka_event_partitions",
                   "kafka_matching_partitions", "data_dir", "matching_engine",
                   "commission_schedule", "session_rules", "fat_finger_pct",
                   "max_order_notional_yen")


@pytest.mark.parametrize("processes", [compose_processes(), k8s_processes()],
                         ids=["compose", "k8s"])
def test_every_process_of_a_deployment_shares_the_store_topics_and_rules(
        processes: list[Process]) -> None:
    first = processes[0]
    expected = {name: getattr(first.settings(), name) for name in SHARED_SETTINGS}
    for process in processes[1:]:
        settings = process.settings()
        differ = {name: getattr(settings, name) for name in SHARED_SETTINGS
                  if getattr(settings, name) != expected[name]}
        assert not differ, f"{process.where} differs from {first.where}: {differ}"


@pytest.mark.parametrize("process", [p for p in all_processes() if p.kind != "oneshot"],
                         ids=lambda p: p.where)
def test_probes_ask_what_the_process_serves_on_its_port(process: Process) -> None:
    assert process.probes, f"{process.where} has no HTTP health check"
    paths = served_paths(process.kind)
    for path, port, what in process.probes:
        assert path in paths, f"{process.where} {what}: {path} is not served ({sorted(paths)})"
        assert port == process.listening_port(), (
            f"{process.where} {what}: port {port}, but the process listens on "
            f"{process.listening_port()}")
    asked = {path for path, _, _ in process.probes}
    assert "/readyz" in asked, f"{process.where}: readiness is not checked on /readyz"
    if not process.where.startswith("compose"):
        kinds = {what: path for path, _, what in process.probes}
        assert kinds.get("readinessProbe") == "/readyz", process.where
        assert kinds.get("livenessProbe") == "/healthz", (
            f"{process.where}: liveness must be /healthz (a worker retrying a lost broker is "
            "alive; restarting it for that helps nothing)")


def _service_process(name: str) -> Process:
    return next(p for p in compose_processes() if p.where == f"compose service {name!r}")


def _scrape_targets() -> list[tuple[str, str, int, str]]:
    """(job, host, port, metrics path) of every scrape in prometheus.yml."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = []
    for job in config["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets.append((job["job_name"], host, int(port), path))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "compose names resolve to A records"
            for host in dns["names"]:
                targets.append((job["job_name"], host, int(dns["port"]), path))
    return targets


def test_prometheus_scrapes_every_tradecore_process_where_it_listens() -> None:
    services = compose()["services"]
    tradecore = {name for name, service in services.items()
                 if service.get("image") == TRADECORE_IMAGE
                 and _service_process(name).kind != "oneshot"}
    scraped = set()
    for job, host, port, path in _scrape_targets():
        if host == "localhost" and job == "prometheus":
            continue
        assert host in services, f"job {job}: {host} is no compose service"
        if host not in tradecore:
            continue
        process = _service_process(host)
        assert port == process.listening_port(), (
            f"job {job}: {host}:{port}, but it listens on {process.listening_port()}")
        assert path in served_paths(process.kind), f"job {job}: {path} is not served"
        scraped.add(host)
    assert scraped == tradecore, f"not scraped: {sorted(tradecore - scraped)}"


def test_k8s_scrape_annotations_point_at_the_metrics_port() -> None:
    for where, metadata, spec in _pod_specs():
        annotations = metadata.get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        container = spec["containers"][0]
        process = next(p for p in k8s_processes() if p.where.startswith(where))
        assert int(annotations["prometheus.io/port"]) == process.listening_port(), where
        assert annotations["prometheus.io/port"] in {
            str(p["containerPort"]) for p in container.get("ports", [])}, where
        assert annotations.get("prometheus.io/path", "/metrics") in served_paths(process.kind)
    for process in k8s_processes():
        if process.kind != "oneshot":
            assert any(where in process.where for where, metadata, _ in _pod_specs()
                       if metadata.get("annotations", {}).get("prometheus.io/scrape")
                       == "true"), f"{process.where} is not marked for scraping"


def test_compose_references_resolve() -> None:
    doc = compose()
    services = doc["services"]
    volumes = set(doc.get("volumes") or {})
    for name, service in services.items():
        for target, dependency in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target}, no such service"
            condition = dependency["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), (
                    f"{name} waits for {target} to be healthy; it has no healthcheck")
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (
                    f"{name} waits for {target} to complete; it would be restarted instead")
        for mount in service.get("volumes", []):
            source = _interpolated(mount).split(":")[0]  # as compose sees it, shell unset
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        if "build" in service:
            build = service["build"]
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    for name in ("kafka-init", "db-migrate"):
        assert _service_process(name).kind == "oneshot"
    for name, service in services.items():
        if service.get("image") == TRADECORE_IMAGE and _service_process(name).kind == "worker":
            waits = service.get("depends_on") or {}
            for setup in ("kafka-init", "db-migrate"):
                assert waits.get(setup, {}).get("condition") == \
                    "service_completed_successfully", f"{name} starts before {setup} is done"


def test_grafana_is_provisioned_with_the_prometheus_and_the_dashboard() -> None:
    services = compose()["services"]
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()  # type: ignore[union-attr]
    assert host in services and port == "9090", source["url"]
    grafana_mounts = dict(mount.split(":")[:2] for mount in services["grafana"]["volumes"])
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "tradecore.yaml").read_text())
    (provider,) = providers["providers"]
    host_folder = next(src for src, dst in grafana_mounts.items()
                       if dst == provider["options"]["path"])
    assert (COMPOSE.parent / host_folder / DASHBOARD.name).is_file()
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    for panel in dashboard_panels():
        uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
        assert uids == {source["uid"]}, f"panel {panel['title']!r} uses {uids}"
    jobs = {job for job, *_ in _scrape_targets()}
    for query in dashboard_queries():
        for pattern in re.findall(r'job=~"([^"]*)"', query.expr):
            assert any(re.fullmatch(pattern, job) for job in jobs), query


def test_the_dashboard_shows_what_operators_watch() -> None:
    titles = " / ".join(panel["title"].lower() for panel in dashboard_panels())
    for topic in ("orders", "fills", "stage lag", "relay rate", "consumer lag",
                  "dead letters", "http latency", "streams bars", "days closed",
                  "missing symbols", "predictions", "strategy orders", "day close"):
        assert topic in titles, f"no panel for {topic}: {titles}"


def _dashboard_metrics() -> list[str]:
    return sorted({name for query in dashboard_queries() for name in query.metrics()})


@pytest.mark.parametrize("metric", _dashboard_metrics())
def test_dashboard_metric_is_exported_by_the_code(metric: str) -> None:
    if metric in PROMETHEUS_OWN:
        return
    panels = sorted({q.panel for q in dashboard_queries() if metric in q.metrics()})
    assert metric in exported_series(), (
        f"{metric} (panels {panels}) is declared nowhere in {', '.join(PACKAGES)}; "
        "docs/operations.md lists the names the workers export")


def test_dashboard_labels_are_labels_of_their_metrics() -> None:
    series = exported_series()
    for query in dashboard_queries():
        known = [series[name] for name in query.metrics() if name in series]
        if not known:
            continue  # a metric not exported yet fails in the test above
        allowed = {"job", "instance"} | {"le" for m in known if m.kind == "Histogram"}
        for metric in known:
            allowed |= metric.labels
        unknown = query.labels() - allowed
        assert not unknown, f"panel {query.panel!r}: labels {sorted(unknown)} of {query.expr}"


def test_dashboard_metrics_are_documented() -> None:
    documented = set(re.findall(r"`(tradecore_[a-z0-9_]+)`", OPERATIONS.read_text()))
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in _dashboard_metrics()}
    missing = sorted(bases - documented - PROMETHEUS_OWN)
    assert not missing, f"docs/operations.md does not list {missing}"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource listed twice"
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk, (
        f"not listed: {sorted(on_disk - set(listed))}; missing: {sorted(set(listed) - on_disk)}")


def test_k8s_references_resolve() -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in k8s_documents()}
    assert len(names) == len(k8s_documents()), "two objects of one kind share a name"
    pods = list(_pod_specs())
    for where, _, spec in pods:
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        assert (kind, source[key]["name"]) in names, f"{where}: {source}"
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert mounted <= set(volumes), f"{where}: mounts {sorted(mounted - set(volumes))}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names, where
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, (
                    f"{where}: claim {claim} is no PersistentVolumeClaim of the folder")
    for doc in k8s_objects("Deployment"):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), doc["metadata"]["name"]
    for service in k8s_objects("Service"):
        selected = [(metadata, spec) for _, metadata, spec in pods
                    if service["spec"]["selector"].items() <= metadata.get("labels", {}).items()]
        assert selected, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            for _, spec in selected:
                ports = {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in ports, service["metadata"]["name"]


# --- the streams worker (issue 12) ---------------------------------------------------------

def _mounts_of(process_where: str) -> list[tuple[str, bool, str]]:
    """(container path, read-only, source) of each mount of one process's container:
    a compose service's volumes (shell unset) or a k8s container's volumeMounts (source
    ``kind/name`` of the pod volume)."""
    if process_where.startswith("compose service "):
        name = process_where.removeprefix("compose service ").strip("'")
        found = []
        for mount in compose()["services"][name].get("volumes", []):
            parts = _interpolated(mount).split(":")
            found.append((parts[1], parts[2:3] == ["ro"], parts[0]))
        return found
    for where, _, spec in _pod_specs():
        for container in spec["containers"]:
            if process_where == f"{where} container {container['name']!r}":
                volumes = {v["name"]: v for v in spec.get("volumes", [])}
                found = []
                for mount in container.get("volumeMounts", []):
                    volume = volumes[mount["name"]]
                    kind = next(key for key in volume if key != "name")
                    found.append((mount["mountPath"], bool(mount.get("readOnly")),
                                  f"{kind}/{volume[kind].get('claimName', '')}"))
                return found
    raise AssertionError(f"{process_where}: no such container")


def _mount_holding(path: Path, mounts: list[tuple[str, bool, str]]
                   ) -> tuple[str, bool, str] | None:
    """The mount ``path`` lies in (the deepest one), or None when it is in the image."""
    holding = [m for m in mounts if path.is_relative_to(m[0]) and path != Path(m[0])]
    return max(holding, key=lambda m: len(m[0]), default=None)


def streams_processes() -> list[Process]:
    return [p for p in all_processes() if p.argv == ("tradecore", "worker", "streams")]


@pytest.mark.parametrize("process", streams_processes(), ids=lambda p: p.where)
def test_streams_worker_finds_its_checkpoint_and_data_on_read_only_mounts(
        process: Process) -> None:
    """The worker exits 2 without a checkpoint file, and reads listed_info (and, replaying
    files, daily_quotes) from TRADECORE_STREAMS_DATA: both must be on a volume (not baked
    into the image, not in a folder nothing mounts), read-only, and in k8s the
    checkpoint's volume is the ``tradecore-models`` PVC."""
    settings = process.settings()
    assert settings.model_checkpoint is not None, f"{process.where}: no checkpoint set"
    assert settings.model_checkpoint.suffix == ".safetensors", (
        f"{process.where}: {settings.model_checkpoint} is not what `tradecore model train "
        "--out` writes")
    assert settings.streams_data is not None, f"{process.where}: TRADECORE_STREAMS_DATA unset"
    mounts = _mounts_of(process.where)
    for what, path in (("TRADECORE_MODEL_CHECKPOINT", settings.model_checkpoint),
                       ("TRADECORE_STREAMS_DATA", settings.streams_data)):
        mount = _mount_holding(path, mounts)
        assert mount is not None, f"{process.where}: {what}={path} is on no mounted volume"
        assert mount[1], f"{process.where}: {what}'s volume at {mount[0]} is writable"
        assert mount[0] != "/tmp", f"{process.where}: {what} is in the scratch /tmp"
    if not process.where.startswith("compose"):
        models = _mount_holding(settings.model_checkpoint, mounts)
        assert models is not None
        assert models[2] == "persistentVolumeClaim/tradecore-models", (
            f"{process.where}: the checkpoint comes from {models[2]}")
        (claim,) = [doc for doc in k8s_objects("PersistentVolumeClaim")
                    if doc["metadata"]["name"] == "tradecore-models"]
        modes = set(claim["spec"]["accessModes"])
        assert modes & {"ReadWriteMany", "ReadOnlyMany"}, (
            f"tradecore-models is {sorted(modes)}: a pod on another node could not mount it")


@pytest.mark.parametrize("process", streams_processes(), ids=lambda p: p.where)
def test_streams_worker_is_one_active_instance(process: Process) -> None:
    """One worker runs the loop (the `streams` fence); a second is at most a standby."""
    if process.where.startswith("compose"):
        name = process.where.removeprefix("compose service ").strip("'")
        service = compose()["services"][name]
        assert service.get("deploy", {}).get("replicas", 1) <= 2, process.where
        assert "streams" in service.get("profiles", []), (
            f"{process.where} would start with a plain `up`, without a checkpoint")
        return
    (deployment,) = [doc for _, doc in k8s_documents() if doc.get("kind") == "Deployment"
                     and process.where.split()[1] == f"Deployment/{doc['metadata']['name']}"]
    assert deployment["spec"]["replicas"] <= 2, process.where
    assert deployment["spec"].get("strategy", {}).get("type") == "Recreate", (
        f"{process.where}: a rolling update's new pod would wait on the fence the old one "
        "holds and never become ready")


def test_the_jquants_refresh_token_is_never_written_in_the_files() -> None:
    """From the shell/.env in compose, from a Secret in Kubernetes: never a literal."""
    name = "TRADECORE_JQUANTS_REFRESH_TOKEN"
    for service, body in compose()["services"].items():
        value = (body.get("environment") or {}).get(name)
        if value is not None:
            assert re.fullmatch(rf"\$\{{{name}(:?-)?\}}", str(value)), (
                f"compose service {service!r}: {name} is {value!r}, not taken from the shell")
    for doc in k8s_objects("ConfigMap"):
        assert name not in doc.get("data", {}), f"ConfigMap {doc['metadata']['name']}"
    for where, _, spec in _pod_specs():
        for container in spec["containers"]:
            for item in container.get("env", []):
                assert item["name"] != name or "valueFrom" in item, where
    streams_pods = [(where, spec) for where, _, spec in _pod_specs()
                    if any(c.get("args") == ["tradecore", "worker", "streams"]
                           for c in spec["containers"])]
    assert streams_pods
    secrets = {doc["metadata"]["name"]: doc.get("stringData", {})
               for doc in k8s_objects("Secret")}
    for where, spec in streams_pods:
        refs = [source["secretRef"]["name"] for c in spec["containers"]
                for source in c.get("envFrom", []) if "secretRef" in source]
        assert any(name in secrets.get(ref, {}) for ref in refs), (
            f"{where}: no Secret gives it {name}")
