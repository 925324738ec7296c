"""The Kubernetes manifests of deploy/k8s agree with the settings, the CLI, the API and the metrics.

Every check returns a list of problems; each is run on the real manifests (expect
none) and, below, on mutated copies (expect the mutation to be reported).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy.checks import (
    INLINE_TOKENS,
    REPO,
    TOKEN_FILES,
    Check,
    assert_mutation_reported,
    cli_problems,
    command_id,
    default,
    is_within,
    load_yaml,
    load_yaml_all,
    metric_problems,
    probe_routes,
    settings_with,
    simstream_argv,
    unknown_settings,
)
from workers.api.auth import is_loopback

K8S = "deploy/k8s"
ADAPTER = "deploy/prometheus/adapter-values.yaml"
WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")

Manifests = dict[str, list[dict[str, Any]]]


# --- reading the manifests ----------------------------------------------------------------


def read_manifests() -> dict[str, str]:
    """Text of every YAML file of deploy/k8s, by path relative to the repository."""
    return {
        path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted((REPO / K8S).glob("*.yaml"))
    }


def parse(files: Mapping[str, str]) -> Manifests:
    return {path: load_yaml_all(text) for path, text in files.items()}


def objects(manifests: Manifests, kind: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) of every Kubernetes object (kustomization.yaml excluded)."""
    for path, docs in manifests.items():
        for doc in docs:
            if doc.get("kind") != "Kustomization" and (kind is None or doc.get("kind") == kind):
                yield path, doc


def name_of(doc: Mapping[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name", "?"))


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any]:
    return dict(((doc.get("spec") or {}).get("template") or {}).get("spec") or {})


def containers(manifests: Manifests) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, workload, container) of every container of every workload."""
    for path, doc in objects(manifests):
        if doc.get("kind") in WORKLOADS:
            for container in pod_spec(doc).get("containers", []):
                yield f"{path} {doc['kind']}/{name_of(doc)}", doc, container


def argv_of(container: Mapping[str, Any]) -> list[str] | None:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    return simstream_argv(words) if words else None


def runs(container: Mapping[str, Any], *commands: str) -> bool:
    """Whether it runs one of these ``simstream`` commands."""
    argv = argv_of(container) or []
    return bool(argv) and argv[0] in commands


def settings_data(manifests: Manifests) -> dict[str, str]:
    """The ConfigMap every simstream pod loads (envFrom)."""
    for _, doc in objects(manifests, "ConfigMap"):
        if name_of(doc) == "simstream-settings":
            return {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
    return {}


def env_of(container: Mapping[str, Any], manifests: Manifests) -> dict[str, str]:
    """The settings a container sees: the ConfigMaps it loads, then its own literal env."""
    env: dict[str, str] = {}
    configmaps = {name_of(d): d.get("data") or {} for _, d in objects(manifests, "ConfigMap")}
    for source in container.get("envFrom") or []:
        ref = str((source.get("configMapRef") or {}).get("name", ""))
        env.update({str(k): str(v) for k, v in configmaps.get(ref, {}).items()})
    for var in container.get("env") or []:
        if "value" in var:
            env[str(var["name"])] = str(var["value"])
    return env


def port_number(container: Mapping[str, Any], port: Any) -> int | None:
    """A probe's port (a number or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


# --- checks -------------------------------------------------------------------------------


def kustomization_problems(files: Mapping[str, str]) -> list[str]:
    """kustomization.yaml lists every manifest (templates apart) and only existing files."""
    kustomization = load_yaml(files[f"{K8S}/kustomization.yaml"])
    listed = {f"{K8S}/{r}" for r in kustomization.get("resources", [])}
    problems = [f"{K8S}/kustomization.yaml: {r} does not exist" for r in listed - set(files)]
    for path in sorted(set(files) - listed - {f"{K8S}/kustomization.yaml"}):
        if not path.endswith(".example.yaml"):
            problems.append(f"{K8S}/kustomization.yaml: {path} is not listed")
    for image in kustomization.get("images", []):
        tag = str(image.get("newTag", ""))
        if not tag or tag == "latest":
            problems.append(f"{K8S}/kustomization.yaml: image {image.get('name')} tag {tag!r}")
    return problems


def setting_problems(manifests: Manifests) -> list[str]:
    """Every SIMSTREAM_* name set by a ConfigMap, Secret or container env is a setting."""
    problems = []
    for path, doc in objects(manifests):
        where = f"{path} {doc.get('kind')}/{name_of(doc)}"
        if doc.get("kind") == "ConfigMap":
            problems += unknown_settings(doc.get("data") or {}, where)
        if doc.get("kind") == "Secret":
            problems += unknown_settings(doc.get("stringData") or {}, where)
    for where, _, container in containers(manifests):
        problems += unknown_settings((v["name"] for v in container.get("env") or []), where)
    return problems


def reference_problems(manifests: Manifests) -> list[str]:
    """ConfigMaps, Secrets, secret keys and PVCs that pods use exist in the manifests."""
    configmaps = {name_of(d) for _, d in objects(manifests, "ConfigMap")}
    secrets = {name_of(d): set(d.get("stringData") or {}) for _, d in objects(manifests, "Secret")}
    claims = {name_of(d) for _, d in objects(manifests, "PersistentVolumeClaim")}
    external = {"simstream-kafka-ca"}  # created from the Kafka operator's CA, see the runbook
    problems = []
    for where, doc, container in containers(manifests):
        for source in container.get("envFrom") or []:
            if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                problems.append(f"{where}: no ConfigMap {source['configMapRef']['name']}")
            if "secretRef" in source and source["secretRef"]["name"] not in secrets:
                problems.append(f"{where}: no Secret {source['secretRef']['name']}")
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["key"] not in secrets.get(ref["name"], set()):
                problems.append(f"{where}: no key {ref['key']} in Secret {ref['name']}")
        for volume in pod_spec(doc).get("volumes") or []:
            secret = (volume.get("secret") or {}).get("secretName")
            if secret and secret not in secrets and secret not in external:
                problems.append(f"{where}: no Secret {secret}")
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                problems.append(f"{where}: no PersistentVolumeClaim {claim}")
    return problems


def image_problems(manifests: Manifests) -> list[str]:
    """Every container image has an explicit tag that is not `latest`."""
    problems = []
    for where, _, container in containers(manifests):
        image = str(container.get("image", ""))
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag or tag in ("", "latest"):
            problems.append(f"{where}: image {image!r} is not pinned")
    return problems


def probe_problems(manifests: Manifests) -> list[str]:
    """Ports agree with the settings; index pods probe /healthz and /readyz on the API port;
    dispatcher and workers are probed and scraped on the metrics port."""
    config = settings_data(manifests)
    api_port = int(config.get("SIMSTREAM_API_PORT", default("api_port")))
    metrics_port = int(config.get("SIMSTREAM_METRICS_PORT", default("metrics_port")))
    problems = []
    if api_port != default("api_port") or metrics_port != default("metrics_port"):
        problems.append(f"{K8S}: ports {api_port}/{metrics_port} differ from the settings")
    if config.get("SIMSTREAM_API_HOST") != "0.0.0.0":
        problems.append(f"{K8S} simstream-settings: the API must bind 0.0.0.0 in a pod")
    for where, doc, container in containers(manifests):
        if runs(container, "serve"):
            port = api_port
            wanted = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        elif runs(container, "dispatcher", "worker"):
            port = metrics_port
            wanted = {"livenessProbe": "/metrics"}
        else:
            continue
        declared = {int(p["containerPort"]) for p in container.get("ports") or []}
        if port not in declared:
            problems.append(f"{where}: container port {port} not declared ({declared})")
        for probe, path in wanted.items():
            http = (container.get(probe) or {}).get("httpGet") or {}
            actual = (http.get("path"), port_number(container, http.get("port")))
            if actual != (path, port) or (port == api_port and path not in probe_routes()):
                problems.append(f"{where}: {probe} {actual}, expected {(path, port)}")
        annotations = ((doc["spec"]["template"].get("metadata") or {}).get("annotations")) or {}
        if annotations.get("prometheus.io/port") != str(port):
            problems.append(
                f"{where}: scraped on {annotations.get('prometheus.io/port')}, expected {port}"
            )
    return problems


def volume_problems(manifests: Manifests) -> list[str]:
    """Index pods keep their data dir on their own claim; every simstream pod mounts the
    shared ReadWriteMany registry at the registry directory of the settings."""
    claims = {name_of(d): d for _, d in objects(manifests, "PersistentVolumeClaim")}
    problems = []
    registry_claims = set()
    for where, doc, container in containers(manifests):
        if not runs(container, "serve", "dispatcher", "worker", "beat"):
            continue
        settings = settings_with(env_of(container, manifests))
        volumes = {v["name"]: v for v in pod_spec(doc).get("volumes") or []}
        templates = {name_of(t) for t in (doc.get("spec") or {}).get("volumeClaimTemplates") or []}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
        registry = mounts.get(str(settings.registry_dir))
        claim = ((volumes.get(registry or "") or {}).get("persistentVolumeClaim") or {}).get(
            "claimName"
        )
        if claim is None:
            problems.append(f"{where}: no claim at the registry {settings.registry_dir}")
        else:
            registry_claims.add(claim)
            modes = (claims.get(claim) or {}).get("spec", {}).get("accessModes", [])
            if "ReadWriteMany" not in modes:
                problems.append(f"{where}: registry claim {claim} is not ReadWriteMany")
        if runs(container, "serve"):
            own = [
                name
                for path, name in mounts.items()
                if name in templates and is_within(str(settings.snapshots_dir), path)
            ]
            if doc.get("kind") != "StatefulSet" or not own:
                problems.append(
                    f"{where}: the snapshots {settings.snapshots_dir} need a volumeClaimTemplate"
                )
    if len(registry_claims) > 1:
        problems.append(f"{K8S}: pods mount different registries {sorted(registry_claims)}")
    return problems


def workload_problems(manifests: Manifests) -> list[str]:
    """GPU workers ask for a GPU; one beat with Recreate; every container has resources."""
    problems = []
    beats = 0
    for where, doc, container in containers(manifests):
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if not {"cpu", "memory"} <= set(requests) or "memory" not in limits:
            problems.append(f"{where}: needs cpu and memory requests and a memory limit")
        cuda = str(container.get("image", "")).startswith("simstream-cuda:")
        if cuda and "nvidia.com/gpu" not in limits:
            problems.append(f"{where}: a CUDA worker without an nvidia.com/gpu limit")
        if cuda and "solo" not in (argv_of(container) or []):
            problems.append(f"{where}: a GPU worker must use --pool solo")
        if runs(container, "beat"):
            beats += 1
            spec = doc.get("spec") or {}
            if doc.get("kind") != "Deployment" or spec.get("replicas") != 1:
                problems.append(f"{where}: beat must be a Deployment with replicas: 1")
            if (spec.get("strategy") or {}).get("type") != "Recreate":
                problems.append(f"{where}: beat must use strategy Recreate")
    if beats != 1:
        problems.append(f"{K8S}: {beats} beat containers, expected exactly one")
    return problems


def service_problems(manifests: Manifests) -> list[str]:
    """Services select pods and target ports those pods declare; StatefulSets name a
    headless Service."""
    pods = [
        (
            ((doc["spec"]["template"].get("metadata") or {}).get("labels")) or {},
            pod_spec(doc).get("containers", []),
        )
        for _, doc in objects(manifests)
        if doc.get("kind") in WORKLOADS
    ]
    services = {name_of(d): d for _, d in objects(manifests, "Service")}
    problems = []
    for name, service in services.items():
        selector = service["spec"].get("selector") or {}
        selected = [cs for labels, cs in pods if selector.items() <= labels.items()]
        if not selected:
            problems.append(f"{K8S} Service/{name}: selects no pod")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            for cs in selected:
                if not any(port_number(c, target) for c in cs):
                    problems.append(f"{K8S} Service/{name}: no pod port {target!r}")
    for path, doc in objects(manifests, "StatefulSet"):
        headless = services.get(str(doc["spec"].get("serviceName")))
        if headless is None or headless["spec"].get("clusterIP") != "None":
            problems.append(f"{path} StatefulSet/{name_of(doc)}: no headless Service")
    return problems


def autoscaler_problems(manifests: Manifests, adapter_text: str) -> list[str]:
    """The HPA scales an existing Deployment on metrics the code exports, served by the
    adapter rule."""
    deployments = {name_of(d) for _, d in objects(manifests, "Deployment")}
    adapter = load_yaml(adapter_text)
    served = {(rule.get("name") or {}).get("as") for rule in adapter["rules"].get("external", [])}
    expressions = [
        (f"{ADAPTER} rule {i}", f"{rule['seriesQuery']} {rule['metricsQuery']}")
        for i, rule in enumerate(adapter["rules"].get("external", []))
    ]
    problems = metric_problems(expressions)
    hpas = list(objects(manifests, "HorizontalPodAutoscaler"))
    if not hpas:
        problems.append(f"{K8S}: no HorizontalPodAutoscaler")
    for path, hpa in hpas:
        where = f"{path} HorizontalPodAutoscaler/{name_of(hpa)}"
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or target.get("name") not in deployments:
            problems.append(f"{where}: scales {target}, not a Deployment of the manifests")
        for metric in hpa["spec"].get("metrics", []):
            name = ((metric.get("external") or {}).get("metric") or {}).get("name")
            if name is None:
                continue
            problems += metric_problems([(where, name)])
            if name not in served:
                problems.append(f"{where}: external metric {name} is served by no adapter rule")
    return problems


def _secret_key(volume: Mapping[str, Any], relative: str) -> str:
    """The Secret key a file of a secret volume holds (``items`` may rename keys)."""
    for item in (volume.get("secret") or {}).get("items") or []:
        if item.get("path") == relative:
            return str(item.get("key"))
    return relative


def auth_problems(manifests: Manifests) -> list[str]:
    """Index pods reachable from the network in production read their bearer tokens from
    files of a mounted Secret, mounted whole (a subPath mount never sees the Secret
    change, so tokens could not rotate); no token is set inline (env does not rotate)."""
    secrets = {
        name_of(d): {*(d.get("stringData") or {}), *(d.get("data") or {})}
        for _, d in objects(manifests, "Secret")
    }
    problems = []
    for path, doc in objects(manifests):
        if doc.get("kind") in ("ConfigMap", "Secret"):
            data = {*(doc.get("data") or {}), *(doc.get("stringData") or {})}
            problems += [
                f"{path} {doc['kind']}/{name_of(doc)}: {name} is set inline; "
                "tokens belong in the mounted token files"
                for name in INLINE_TOKENS
                if name in data
            ]
    for where, doc, container in containers(manifests):
        if not runs(container, "serve"):
            continue
        problems += [
            f"{where}: {var['name']} is set inline; tokens belong in the mounted token files"
            for var in container.get("env") or []
            if var.get("name") in INLINE_TOKENS
        ]
        env = env_of(container, manifests)
        settings = settings_with(env)
        if settings.environment != "production" or is_loopback(settings.api_host):
            continue
        volumes = {v["name"]: v for v in pod_spec(doc).get("volumes") or []}
        for setting in TOKEN_FILES:
            file = env.get(setting, "")
            mount = next(
                (
                    m
                    for m in container.get("volumeMounts") or []
                    if file and file != m["mountPath"] and is_within(file, m["mountPath"])
                ),
                None,
            )
            if mount is None:
                problems.append(f"{where}: {setting}={file!r} is in no mounted volume")
                continue
            volume = volumes.get(mount["name"]) or {}
            secret = (volume.get("secret") or {}).get("secretName")
            key = _secret_key(volume, str(PurePosixPath(file).relative_to(mount["mountPath"])))
            if "subPath" in mount:
                problems.append(
                    f"{where}: {setting} is mounted with subPath, which never sees the "
                    "Secret change (tokens could not rotate)"
                )
            if secret is None:
                problems.append(f"{where}: {setting}={file!r} is not in a Secret volume")
            elif key not in secrets.get(secret, set()):
                problems.append(f"{where}: {setting}: no key {key!r} in Secret {secret}")
    return problems


def manifest_problems(files: Mapping[str, str]) -> list[str]:
    """Every check of the manifests except the CLI one (which needs the other commands)."""
    k8s = {path: text for path, text in files.items() if path.startswith(K8S)}
    manifests = parse(k8s)
    return [
        *kustomization_problems(k8s),
        *setting_problems(manifests),
        *reference_problems(manifests),
        *image_problems(manifests),
        *probe_problems(manifests),
        *volume_problems(manifests),
        *workload_problems(manifests),
        *service_problems(manifests),
        *autoscaler_problems(manifests, files[ADAPTER]),
        *auth_problems(manifests),
    ]


def manifest_commands(files: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    commands = []
    for where, _, container in containers(parse(files)):
        argv = argv_of(container)
        if argv is not None:
            commands.append((where, argv))
    return commands


# --- the real manifests -------------------------------------------------------------------


def _files() -> dict[str, str]:
    return {**read_manifests(), ADAPTER: (REPO / ADAPTER).read_text(encoding="utf-8")}


def test_every_manifest_parses_and_has_a_kind() -> None:
    for path, docs in parse(read_manifests()).items():
        assert docs, path
        assert all("kind" in doc for doc in docs), path


def test_the_manifests_have_the_workloads_of_the_design() -> None:
    manifests = parse(read_manifests())
    kinds = {(doc["kind"], name_of(doc)) for _, doc in objects(manifests)}
    assert ("StatefulSet", "simstream-index") in kinds
    assert ("Deployment", "simstream-dispatcher") in kinds
    assert ("Deployment", "simstream-worker-embed") in kinds
    assert ("Deployment", "simstream-beat") in kinds
    assert ("HorizontalPodAutoscaler", "simstream-worker-embed") in kinds
    assert ("ConfigMap", "simstream-settings") in kinds


def test_the_manifests_agree_with_settings_routes_ports_volumes_and_metrics() -> None:
    assert manifest_problems(_files()) == []


MANIFEST_COMMANDS = manifest_commands(read_manifests())


@pytest.mark.parametrize(
    "command",
    MANIFEST_COMMANDS,
    ids=[f"{w.split()[-1]}: {command_id(a)}" for w, a in MANIFEST_COMMANDS],
)
def test_every_simstream_command_the_manifests_run_is_a_real_cli_command(
    command: tuple[str, list[str]],
) -> None:
    assert cli_problems([command]) == []


# --- the checks bite ----------------------------------------------------------------------

CONFIGMAP = f"{K8S}/configmap.yaml"
INDEX = f"{K8S}/index-statefulset.yaml"
DISPATCHER = f"{K8S}/dispatcher-deployment.yaml"
BEAT = f"{K8S}/beat-deployment.yaml"
EMBED = f"{K8S}/worker-embed-deployment.yaml"
HPA = f"{K8S}/worker-embed-hpa.yaml"
SECRETS = f"{K8S}/secrets.example.yaml"


def _commands(files: dict[str, str]) -> list[str]:
    return cli_problems(manifest_commands(files))


MUTATIONS: list[tuple[str, str, str, str, Check, str]] = [
    (
        "misspelt setting in the ConfigMap",
        CONFIGMAP,
        "SIMSTREAM_KAFKA_SASL_MECHANISM:",
        "SIMSTREAM_KAFKA_SASL_MECHANISMS:",
        manifest_problems,
        "SIMSTREAM_KAFKA_SASL_MECHANISMS is not a setting",
    ),
    (
        "misspelt setting in a container env",
        INDEX,
        "- name: SIMSTREAM_KAFKA_SASL_USERNAME",
        "- name: SIMSTREAM_KAFKA_SASL_USER",
        manifest_problems,
        "SIMSTREAM_KAFKA_SASL_USER is not a setting",
    ),
    (
        "missing command",
        DISPATCHER,
        'args: ["simstream", "dispatcher"]',
        'args: ["simstream", "dispatch"]',
        _commands,
        "simstream dispatch",
    ),
    (
        "wrong API port",
        INDEX,
        "containerPort: 8000",
        "containerPort: 8080",
        manifest_problems,
        "container port 8000 not declared",
    ),
    (
        "readiness on a route that does not exist",
        INDEX,
        "path: /readyz",
        "path: /ready",
        manifest_problems,
        "readinessProbe ('/ready', 8000)",
    ),
    (
        "wrong metrics port in the scrape annotation",
        DISPATCHER,
        'prometheus.io/port: "9100"',
        'prometheus.io/port: "9090"',
        manifest_problems,
        "scraped on 9090, expected 9100",
    ),
    (
        "unpinned image",
        DISPATCHER,
        "image: simstream:0.1.0",
        "image: simstream:latest",
        manifest_problems,
        "is not pinned",
    ),
    (
        "registry mounted off the data dir",
        BEAT,
        "mountPath: /var/lib/simstream/models",
        "mountPath: /models",
        manifest_problems,
        "no claim at the registry /var/lib/simstream/models",
    ),
    (
        "data dir moved away from the volumes",
        CONFIGMAP,
        "SIMSTREAM_DATA_DIR: /var/lib/simstream",
        "SIMSTREAM_DATA_DIR: /srv/simstream",
        manifest_problems,
        "no claim at the registry /srv/simstream/models",
    ),
    (
        "two beats",
        BEAT,
        "  replicas: 1\n",
        "  replicas: 2\n",
        manifest_problems,
        "beat must be a Deployment with replicas: 1",
    ),
    (
        "beat rolled with a surge",
        BEAT,
        "    type: Recreate",
        "    type: RollingUpdate",
        manifest_problems,
        "beat must use strategy Recreate",
    ),
    (
        "GPU worker without a GPU",
        EMBED,
        'cpu: "8"\n              memory: 16Gi\n              nvidia.com/gpu: 1\n',
        'cpu: "8"\n              memory: 16Gi\n',
        manifest_problems,
        "a CUDA worker without an nvidia.com/gpu limit",
    ),
    (
        "autoscaler on a metric the code does not export",
        HPA,
        "name: simstream_items_lag_records",
        "name: simstream_items_backlog",
        manifest_problems,
        "simstream_items_backlog is not exported",
    ),
    (
        "index pods without their token files",
        INDEX,
        "            - name: SIMSTREAM_API_READ_TOKENS_FILE\n"
        "              value: /etc/simstream/api-tokens/read\n",
        "",
        manifest_problems,
        "SIMSTREAM_API_READ_TOKENS_FILE='' is in no mounted volume",
    ),
    (
        "token files mounted with subPath",
        INDEX,
        "              mountPath: /etc/simstream/api-tokens\n",
        "              mountPath: /etc/simstream/api-tokens\n              subPath: read\n",
        manifest_problems,
        "mounted with subPath",
    ),
    (
        "token file from a volume that is no Secret",
        INDEX,
        "        - name: api-tokens\n          secret:\n"
        "            secretName: simstream-api-tokens",
        "        - name: api-tokens\n          emptyDir: {}",
        manifest_problems,
        "is not in a Secret volume",
    ),
    (
        "token file named after a key the Secret lacks",
        SECRETS,
        "  admin: |\n",
        "  admins: |\n",
        manifest_problems,
        "no key 'admin' in Secret simstream-api-tokens",
    ),
    (
        "inline tokens in a Secret read as env",
        SECRETS,
        "  SIMSTREAM_CELERY_RESULT_BACKEND:",
        "  SIMSTREAM_API_READ_TOKENS: CHANGE-ME\n  SIMSTREAM_CELERY_RESULT_BACKEND:",
        manifest_problems,
        "SIMSTREAM_API_READ_TOKENS is set inline",
    ),
    (
        "manifest left out of the kustomization",
        f"{K8S}/kustomization.yaml",
        "  - beat-deployment.yaml\n",
        "",
        manifest_problems,
        "beat-deployment.yaml is not listed",
    ),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "check", "expected"),
    [m[1:] for m in MUTATIONS],
    ids=[m[0] for m in MUTATIONS],
)
def test_a_mutated_copy_is_reported(
    file: str, old: str, new: str, check: Check, expected: str
) -> None:
    assert_mutation_reported(_files(), file, old, new, check, expected)


def test_index_pods_split_into_partition_sets_by_ordinal_and_the_router_fronts_them() -> None:
    from workers.cluster.placement import derive_set

    docs = {(doc["kind"], name_of(doc)): doc for _, doc in objects(parse(read_manifests()))}
    settings = docs[("ConfigMap", "simstream-settings")]["data"]
    sets = int(settings["SIMSTREAM_PARTITION_SETS"])
    index = docs[("StatefulSet", "simstream-index")]
    replicas = index["spec"]["replicas"]
    pods = [f"simstream-index-{n}" for n in range(replicas)]
    per_set = [sum(derive_set(p, sets) == s for p in pods) for s in range(sets)]
    assert sets == 2 and per_set == [2, 2]
    [node] = index["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in node["env"]}
    assert env["SIMSTREAM_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    service = index["spec"]["serviceName"]
    assert env["SIMSTREAM_NODE_URL"]["value"] == f"http://$(SIMSTREAM_NODE_ID).{service}:8000"
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # One index pod down at a time: every set keeps a replica through a drain.
    assert docs[("PodDisruptionBudget", "simstream-index")]["spec"] == {
        "maxUnavailable": 1,
        "selector": index["spec"]["selector"],
    }
    router = docs[("Deployment", "simstream-router")]
    [container] = router["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["simstream", "router"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ("Service", "simstream-router") in docs
    assert ("PodDisruptionBudget", "simstream-router") in docs
