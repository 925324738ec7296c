"""The compose stack (compose file, .env.example, Redis ACLs, Prometheus, Grafana, runbook)
agrees with the code.

Every check returns a list of problems; each is run on the real files (expect none)
and, below, on mutated copies (expect the mutation to be reported).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.checks import (
    INLINE_TOKENS,
    METRIC,
    REPO,
    SETTING,
    TOKEN_FILES,
    Check,
    assert_mutation_reported,
    cli_problems,
    command_id,
    default,
    heading_anchors,
    is_within,
    load_yaml,
    metric_problems,
    probe_routes,
    read,
    runbook_commands,
    setting_names,
    settings_with,
    simstream_argv,
    unknown_settings,
)
from workers.api.auth import is_loopback

COMPOSE = "docker-compose.yml"
ENV_EXAMPLE = ".env.example"
PROMETHEUS = "deploy/prometheus/prometheus.yml"
ALERTS = "deploy/prometheus/alerts.yml"
DASHBOARD = "deploy/grafana/dashboards/simstream.json"
DATASOURCE = "deploy/grafana/provisioning/datasources/prometheus.yml"
RUNBOOK = "docs/operations.md"
GITIGNORE = ".gitignore"

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
URL = re.compile(r"https?://[^\s'\"]+")
COMPOSE_ONLY_PART = "# 2. compose-only variables"
HA = re.compile(r"^#\s*\[ha\]\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
ASSIGNMENT = re.compile(r"^(?:#\s*(?:\[ha\]\s*)?)?([A-Z][A-Z0-9_]*)=")

# --- reading the files --------------------------------------------------------------------


def interpolate(text: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` with ``env`` or defaults."""
    env = env or {}

    def value(match: re.Match[str]) -> str:
        name, op, fallback = match.group(1), match.group(2), match.group(3) or ""
        if name in env and (env[name] or op != ":-"):
            return env[name]
        return fallback if op in (":-", "-") else ""

    return INTERPOLATION.sub(value, text)


def _interpolated(value: Any, env: Mapping[str, str] | None) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, Mapping):
        return {key: _interpolated(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolated(item, env) for item in value]
    return value


def compose_of(text: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as compose would run it with ``env`` as its .env (or none)."""
    return dict(_interpolated(load_yaml(text), env))


def env_file(text: str) -> dict[str, str]:
    """The active assignments of a .env text (quotes stripped)."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def ha_env(text: str) -> dict[str, str]:
    """The .env of the `ha` layout: each ``# [ha] NAME=value`` replaces NAME."""
    values = env_file(text)
    for line in text.splitlines():
        match = HA.match(line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose.get("services") or {})


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv_of(service: Mapping[str, Any]) -> list[str] | None:
    command = service.get("command")
    return None if command is None else simstream_argv(command)


def runs(service: Mapping[str, Any], *commands: str) -> bool:
    """Whether it runs one of these ``simstream`` commands."""
    argv = argv_of(service) or []
    return bool(argv) and argv[0] in commands


def healthcheck_urls(service: Mapping[str, Any]) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test") or []
    text = test if isinstance(test, str) else " ".join(str(t) for t in test)
    return URL.findall(text)


def volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service (short or long syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            mounts.append((source, rest.split(":")[0]))
        else:
            mounts.append((str(volume.get("source", "")), str(volume.get("target", ""))))
    return mounts


# --- checks: settings and variables -------------------------------------------------------


def compose_setting_problems(compose_text: str) -> list[str]:
    """Every SIMSTREAM_* name compose sets or interpolates is a setting."""
    compose = load_yaml(compose_text)
    problems = []
    for name, service in services(compose).items():
        problems += unknown_settings(environment(service), f"{COMPOSE} service {name}")
    used = [m.group(1) for m in INTERPOLATION.finditer(compose_text)]
    problems += unknown_settings(used, f"{COMPOSE} interpolation")
    return problems


def env_example_problems(env_text: str) -> list[str]:
    """Every setting is named in part 1 of .env.example and every SIMSTREAM_* name there is a
    setting; compose-only names stay in part 2."""
    part1, marker, part2 = env_text.partition(COMPOSE_ONLY_PART)
    problems = [] if marker else [f"{ENV_EXAMPLE}: no {COMPOSE_ONLY_PART!r} section"]
    problems += unknown_settings(SETTING.findall(env_text), ENV_EXAMPLE)
    for line in part1.splitlines():
        match = ASSIGNMENT.match(line)
        if match and not match.group(1).startswith("SIMSTREAM_"):
            problems.append(f"{ENV_EXAMPLE}: {match.group(1)} (not a setting) in part 1")
    for line in part2.splitlines():
        for name in SETTING.findall(line):
            problems.append(f"{ENV_EXAMPLE}: {name} (a setting) among compose-only variables")
    named = set(SETTING.findall(part1))
    problems += [
        f"{ENV_EXAMPLE}: setting {name} is not documented"
        for name in sorted(setting_names() - named)
    ]
    return problems


def compose_variable_problems(compose_text: str, env_text: str) -> list[str]:
    """Compose's variables are declared in .env.example, and their defaults agree with it."""
    active = env_file(env_text)
    declared = {**active, **ha_env(env_text)}
    compose_only = set(env_file(env_text.partition(COMPOSE_ONLY_PART)[2]))
    problems = []
    used = set()
    for match in INTERPOLATION.finditer(compose_text):
        name, op, fallback = match.group(1), match.group(2), match.group(3)
        used.add(name)
        if name not in declared and not name.startswith("SIMSTREAM_"):
            problems.append(f"{COMPOSE}: ${{{name}}} is not declared in {ENV_EXAMPLE}")
        if op == ":-" and name in active and active[name] != fallback:
            problems.append(
                f"{COMPOSE}: default of ${{{name}}} is {fallback!r} but {ENV_EXAMPLE} "
                f"sets {active[name]!r}"
            )
    for name in sorted(compose_only - used):
        problems.append(f"{ENV_EXAMPLE}: compose-only {name} is used nowhere in {COMPOSE}")
    return problems


# --- checks: commands, images, ports, volumes ---------------------------------------------


def compose_commands(compose_text: str) -> list[tuple[str, list[str]]]:
    """Every ``simstream`` argv of the compose file (commands and health checks)."""
    commands = []
    for name, service in services(load_yaml(compose_text)).items():
        test = (service.get("healthcheck") or {}).get("test") or []
        if isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
            test = " ".join(str(t) for t in test[1:])
        elif isinstance(test, list):
            test = [str(t) for t in test[1:]]
        for command in (service.get("command"), test):
            argv = simstream_argv(command) if command else None
            if argv is not None:
                commands.append((f"service {name}", argv))
    return commands


def compose_command_problems(compose_text: str) -> list[str]:
    return cli_problems(compose_commands(compose_text))


def image_problems(compose_text: str) -> list[str]:
    """Every image has an explicit tag that is not `latest`; built images name their Dockerfile."""
    problems = []
    for name, service in services(compose_of(compose_text)).items():
        image = str(service.get("image", ""))
        repository, _, tag = image.rpartition(":")
        if not image or not repository or "/" in tag:
            problems.append(f"{COMPOSE} service {name}: image {image!r} has no tag")
        elif tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{COMPOSE} service {name}: image {image!r} is not pinned")
        build = service.get("build")
        if build is not None:
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else ""
            if not (REPO / dockerfile).is_file():
                problems.append(f"{COMPOSE} service {name}: no Dockerfile {dockerfile}")
    return problems


def port_problems(compose_text: str, prometheus_text: str) -> list[str]:
    """API and metrics ports agree with the settings, health checks and Prometheus."""
    compose = compose_of(compose_text)
    api_port, metrics_port = default("api_port"), default("metrics_port")
    scrape: dict[str, set[int]] = {}
    for job in load_yaml(prometheus_text).get("scrape_configs", []):
        for sd in job.get("dns_sd_configs", []):
            for host in sd.get("names", []):
                scrape.setdefault(host, set()).add(int(sd.get("port", 0)))
    problems = []
    for name, service in services(compose).items():
        env = environment(service)
        where = f"{COMPOSE} service {name}"
        if runs(service, "serve"):
            port = int(env.get("SIMSTREAM_API_PORT", api_port))
            if port != api_port:
                problems.append(f"{where}: SIMSTREAM_API_PORT {port}, settings default {api_port}")
            if env.get("SIMSTREAM_API_HOST") != "0.0.0.0":
                problems.append(f"{where}: the API must bind 0.0.0.0 in a container")
            published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
            if str(port) not in published:
                problems.append(f"{where}: API port {port} is not published ({published})")
            expected, paths = port, {"/healthz", "/readyz"} & probe_routes()
        elif runs(service, "dispatcher", "worker"):
            expected = int(env.get("SIMSTREAM_METRICS_PORT", metrics_port))
            if expected != metrics_port:
                problems.append(
                    f"{where}: SIMSTREAM_METRICS_PORT {expected}, settings default {metrics_port}"
                )
            paths = {"/metrics"}  # prometheus_client's server answers any path
        else:
            continue
        urls = healthcheck_urls(service)
        if not urls:
            problems.append(f"{where}: no HTTP health check")
        for url in urls:
            parts = urlsplit(url)
            if parts.port != expected or parts.path not in paths:
                problems.append(f"{where}: health check {url}, expected port {expected} {paths}")
        if scrape.get(name) != {expected}:
            problems.append(
                f"{PROMETHEUS}: {name} scraped on {sorted(scrape.get(name, set()))}, "
                f"expected [{expected}]"
            )
    return problems


def volume_problems(compose_text: str) -> list[str]:
    """Index nodes keep their data dir on a volume of their own; all share the registry."""
    compose = compose_of(compose_text)
    declared = set(compose.get("volumes") or {})
    problems = []
    registries: dict[str, str] = {}
    node_volumes: dict[str, list[str]] = {}
    for name, service in services(compose).items():
        where = f"{COMPOSE} service {name}"
        mounts = volume_mounts(service)
        for source, _ in mounts:
            if source.startswith("."):
                if not (REPO / source).exists():
                    problems.append(f"{where}: bind mount source {source} does not exist")
            elif source not in declared:
                problems.append(f"{where}: volume {source} is not declared")
        if not runs(service, "serve", "dispatcher", "worker", "beat"):
            continue
        settings = settings_with(environment(service))
        registry = [s for s, t in mounts if t == str(settings.registry_dir)]
        if not registry:
            problems.append(f"{where}: no volume at the registry {settings.registry_dir}")
        for source in registry:
            registries[name] = source
        if runs(service, "serve"):
            data = [
                s
                for s, t in mounts
                if is_within(str(settings.snapshots_dir), t) and s not in registry
            ]
            if not data:
                problems.append(f"{where}: no volume holds the snapshots {settings.snapshots_dir}")
            for source in data:
                node_volumes.setdefault(source, []).append(name)
    if len(set(registries.values())) > 1:
        problems.append(f"{COMPOSE}: services mount different registries {registries}")
    for source, nodes in node_volumes.items():
        if len(nodes) > 1:
            problems.append(f"{COMPOSE}: index nodes {nodes} share the snapshot volume {source}")
    return problems


def dependency_problems(compose_text: str) -> list[str]:
    """Every depends_on has a condition its target can meet; profiles line up."""
    compose = compose_of(compose_text)
    all_services = services(compose)
    problems = []
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{COMPOSE} service {name}: depends_on without conditions")
            continue
        for target, spec in depends.items():
            where = f"{COMPOSE} service {name} -> {target}"
            if target not in all_services:
                problems.append(f"{where}: no such service")
                continue
            condition = (spec or {}).get("condition")
            other = all_services[target]
            if condition == "service_healthy" and not other.get("healthcheck"):
                problems.append(f"{where}: waits for health but {target} has no health check")
            elif condition == "service_completed_successfully":
                if str(other.get("restart", "no")) != "no":
                    problems.append(f"{where}: {target} is one-shot but restarts")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{where}: condition {condition!r}")
            in_other_profile = not set(other.get("profiles") or []) <= set(
                service.get("profiles") or []
            )
            if in_other_profile and (spec or {}).get("required", True):
                problems.append(f"{where}: {target} is in a profile; mark it required: false")
    return problems


def kafka_problems(compose_text: str, env_text: str) -> list[str]:
    """Both layouts: voters are the brokers, replication fits, no unclean leader election.

    The default layout is .env.example as it is; the `ha` layout applies its
    ``# [ha]`` lines and the `ha` profile, and must give 3 brokers, replication
    factor 3 and min.insync.replicas 2.
    """
    problems = []
    for layout, env, profiles in (
        ("default", env_file(env_text), set()),
        ("ha", ha_env(env_text), {"ha"}),
    ):
        compose = compose_of(compose_text, env)
        active = {
            name: service
            for name, service in services(compose).items()
            if set(service.get("profiles") or []) <= profiles
        }
        brokers = {
            str(service.get("hostname", name)): environment(service)
            for name, service in active.items()
            if str(service.get("image", "")).startswith("apache/kafka:")
        }
        where = f"{COMPOSE} ({layout} layout)"
        node_ids = {env_.get("KAFKA_NODE_ID", "?"): host for host, env_ in brokers.items()}
        if len(node_ids) != len(brokers):
            problems.append(f"{where}: brokers share a KAFKA_NODE_ID")
        replication = set()
        for host, benv in brokers.items():
            voters = {
                voter.split("@")[0]: voter.split("@")[1].rsplit(":", 1)[0]
                for voter in benv.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",")
                if "@" in voter
            }
            if voters != node_ids:
                problems.append(f"{where} {host}: voters {voters}, brokers {node_ids}")
            if benv.get("KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE") != "false":
                problems.append(f"{where} {host}: unclean leader election is not disabled")
            rf = int(benv.get("KAFKA_DEFAULT_REPLICATION_FACTOR", "1"))
            isr = int(benv.get("KAFKA_MIN_INSYNC_REPLICAS", "1"))
            replication.add(str(rf))
            if rf > len(brokers) or isr > rf or (rf > 1 and isr < 2):
                problems.append(f"{where} {host}: replication {rf} / min ISR {isr}")
            if layout == "ha" and (len(brokers), rf, isr) != (3, 3, 2):
                problems.append(
                    f"{where}: expected 3 brokers, replication 3, min.insync.replicas 2; "
                    f"got {len(brokers)}, {rf}, {isr}"
                )
        for name, service in active.items():
            senv = environment(service)
            factor = senv.get("SIMSTREAM_REPLICATION_FACTOR")
            if factor is not None and {factor} != replication:
                problems.append(
                    f"{where} service {name}: SIMSTREAM_REPLICATION_FACTOR {factor}, "
                    f"brokers replicate {sorted(replication)}"
                )
            servers = senv.get("SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS")
            if servers is not None:
                hosts = {s.strip().rsplit(":", 1)[0] for s in servers.split(",")}
                if hosts != set(brokers):
                    problems.append(
                        f"{where} service {name}: bootstrap servers {sorted(hosts)}, "
                        f"brokers {sorted(brokers)}"
                    )
    return problems


def redis_problems(compose_text: str, env_text: str, files: Mapping[str, str]) -> list[str]:
    """Redis: the cache evicts LRU within a memory bound; ACL files turn the default user
    off and deny the cache user scripting and admin commands; the user and password of
    each Redis URL (compose defaults and .env.example) match the ACL file of its server.
    """
    compose = compose_of(compose_text)
    problems = []
    acls: dict[str, dict[str, list[str]]] = {}
    for name, service in services(compose).items():
        if not str(service.get("image", "")).startswith("redis:"):
            continue
        command = [str(c) for c in service.get("command") or []]
        where = f"{COMPOSE} service {name}"
        sources = [s for s, t in volume_mounts(service) if t in command]
        if "--aclfile" not in command or not sources:
            problems.append(f"{where}: no ACL file mounted and loaded")
            continue
        acl_path = sources[0].removeprefix("./")
        users = {}
        for line in files.get(acl_path, "").splitlines():
            words = line.split()
            if len(words) < 3 or words[0] != "user":
                problems.append(f"{acl_path}: {line!r} is not a `user` line")
                continue
            users[words[1]] = words[2:]
        acls[name] = users
        if users.get("default", [""])[0] != "off":
            problems.append(f"{acl_path}: the default user is not off")
        if name == "redis-cache" and ("allkeys-lru" not in command or "--maxmemory" not in command):
            problems.append(f"{where}: the cache needs --maxmemory and allkeys-lru")
    urls = [(f"{ENV_EXAMPLE} {k}", k, v) for k, v in env_file(env_text).items()]
    for name, service in services(compose).items():
        urls += [(f"{COMPOSE} service {name} {k}", k, v) for k, v in environment(service).items()]
    for where, key, url in urls:
        if not url.startswith(("redis://", "rediss://")):
            continue
        parts = urlsplit(url)
        rules = acls.get(parts.hostname or "", {}).get(parts.username or "")
        if rules is None:
            problems.append(f"{where}: user {parts.username!r} is not in {parts.hostname}'s ACL")
            continue
        digest = hashlib.sha256((parts.password or "").encode()).hexdigest()
        if f"#{digest}" not in rules:
            problems.append(f"{where}: password of {parts.username} does not match its ACL hash")
        if key == "SIMSTREAM_REDIS_CACHE_URL":
            for needed in ("-@scripting", "-@admin"):
                if needed not in rules:
                    problems.append(f"{where}: cache user {parts.username} lacks {needed}")
    return problems


SECRETS_DIR = "secrets"


def auth_problems(compose_text: str, env_text: str, gitignore_text: str) -> list[str]:
    """Every index node reachable from the network in production is wired to token files
    that are compose secrets (files kept out of git, mounted under /run/secrets); no
    token is given inline, where it could neither rotate nor stay secret."""
    compose = compose_of(compose_text)
    declared = dict(compose.get("secrets") or {})
    active = env_file(env_text)
    problems = [
        f"{ENV_EXAMPLE}: {name} is set inline; tokens belong in the secret files"
        for name in INLINE_TOKENS
        if active.get(name)
    ]
    for name, service in services(compose).items():
        if not runs(service, "serve"):
            continue
        where = f"{COMPOSE} service {name}"
        env = {**active, **environment(service)}
        problems += [
            f"{where}: {n} is set inline; tokens belong in the secret files"
            for n in INLINE_TOKENS
            if environment(service).get(n)
        ]
        settings = settings_with(env)
        if settings.environment != "production" or is_loopback(settings.api_host):
            continue
        mounted: dict[str, str] = {}
        for secret in service.get("secrets") or []:
            source = secret if isinstance(secret, str) else str(secret.get("source", ""))
            target = source if isinstance(secret, str) else str(secret.get("target", source))
            mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = source
        for setting in TOKEN_FILES:
            path = env.get(setting, "")
            if path not in mounted:
                problems.append(
                    f"{where}: {setting}={path!r} is not a secret the service mounts "
                    f"({sorted(mounted)})"
                )
                continue
            source = mounted[path]
            file = str((declared.get(source) or {}).get("file", ""))
            if not file:
                problems.append(f"{COMPOSE}: secret {source} is not declared with a file")
            elif not is_within(file.removeprefix("./"), SECRETS_DIR):
                problems.append(f"{COMPOSE}: secret {source} file {file} is not under ./secrets/")
    if f"/{SECRETS_DIR}/" not in gitignore_text.splitlines():
        problems.append(f".gitignore: /{SECRETS_DIR}/ (the token files) is not ignored")
    return problems


def process_problems(compose_text: str) -> list[str]:
    """Exactly one beat; GPU workers reserve a GPU and run one process (pool solo)."""
    compose = compose_of(compose_text)
    problems = []
    beats = [n for n, s in services(compose).items() if runs(s, "beat")]
    if len(beats) != 1:
        problems.append(f"{COMPOSE}: {len(beats)} services run beat, expected exactly one")
    for name in beats:
        replicas = (services(compose)[name].get("deploy") or {}).get("replicas", 1)
        if int(replicas) != 1:
            problems.append(f"{COMPOSE} service {name}: beat with {replicas} replicas")
    for name, service in services(compose).items():
        if not runs(service, "worker"):
            continue
        devices = (
            ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
        ).get("devices") or []
        gpu = any("gpu" in (d.get("capabilities") or []) for d in devices)
        cuda = str(service.get("image", "")).startswith("simstream-cuda:")
        if cuda != gpu:
            problems.append(f"{COMPOSE} service {name}: CUDA image {cuda} but GPU reserved {gpu}")
        if not gpu and "cpu" not in (service.get("profiles") or []):
            problems.append(f"{COMPOSE} service {name}: a CPU worker outside the cpu profile")
        argv = argv_of(service) or []
        if gpu and "solo" not in argv:
            problems.append(f"{COMPOSE} service {name}: a GPU worker must use --pool solo")
    return problems


def compose_problems(files: Mapping[str, str]) -> list[str]:
    """Every check of the compose file except the CLI one (which needs the other commands)."""
    compose_text, env_text = files[COMPOSE], files[ENV_EXAMPLE]
    prometheus_text = files[PROMETHEUS]
    return [
        *compose_setting_problems(compose_text),
        *env_example_problems(env_text),
        *compose_variable_problems(compose_text, env_text),
        *image_problems(compose_text),
        *port_problems(compose_text, prometheus_text),
        *volume_problems(compose_text),
        *dependency_problems(compose_text),
        *kafka_problems(compose_text, env_text),
        *redis_problems(compose_text, env_text, files),
        *auth_problems(compose_text, env_text, files[GITIGNORE]),
        *process_problems(compose_text),
    ]


# --- checks: monitoring and the runbook ---------------------------------------------------


def dashboard_expressions(dashboard_text: str) -> list[tuple[str, str]]:
    dashboard = json.loads(dashboard_text)
    return [
        (f"{DASHBOARD} panel {panel.get('title')!r}", target["expr"])
        for panel in dashboard.get("panels", [])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_expressions(alerts_text: str) -> list[tuple[str, str]]:
    return [
        (f"{ALERTS} {rule.get('alert')}", str(rule["expr"]))
        for group in load_yaml(alerts_text)["groups"]
        for rule in group["rules"]
    ]


#: The dashboard's template variables: any Prometheus datasource, any instances.
DATASOURCE_VARIABLE = "${datasource}"
INSTANCE_MATCHER = 'instance=~"$instance"'


def dashboard_problems(dashboard_text: str, datasource_text: str) -> list[str]:
    """Metrics exist; the dashboard imports into any Grafana: every panel and target uses
    the ``datasource`` variable (a Prometheus datasource, the provisioned one by default),
    and every simstream series is scoped by the multi-value ``instance`` variable."""
    assert load_yaml(datasource_text)["datasources"][0]["type"] == "prometheus"
    dashboard = json.loads(dashboard_text)
    problems = metric_problems(dashboard_expressions(dashboard_text))
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list", [])}
    source = variables.get("datasource") or {}
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        problems.append(f"{DASHBOARD}: no datasource variable of type prometheus")
    instance = variables.get("instance") or {}
    query = json.dumps(instance.get("query"))
    if instance.get("type") != "query" or "label_values(" not in query or "instance)" not in query:
        problems.append(f"{DASHBOARD}: no instance variable querying the instance label")
    elif not (instance.get("multi") and instance.get("includeAll")):
        problems.append(f"{DASHBOARD}: the instance variable must allow several and All")
    elif (instance.get("datasource") or {}).get("uid") != DATASOURCE_VARIABLE:
        problems.append(f"{DASHBOARD}: the instance variable must query {DATASOURCE_VARIABLE}")
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            continue
        title = panel.get("title")
        for part in [panel, *panel.get("targets", [])]:
            uid = (part.get("datasource") or {}).get("uid")
            if uid != DATASOURCE_VARIABLE:
                problems.append(f"{DASHBOARD} panel {title!r}: datasource {uid!r}")
        for target in panel.get("targets", []):
            for match in METRIC.finditer(target.get("expr", "")):
                if INSTANCE_MATCHER not in (match.group(2) or ""):
                    problems.append(
                        f"{DASHBOARD} panel {title!r}: {match.group(1)} without {INSTANCE_MATCHER}"
                    )
    return problems


def alert_problems(alerts_text: str, runbook_text: str) -> list[str]:
    """Metrics exist; every alert has a runbook section and a severity."""
    anchors = heading_anchors(runbook_text)
    problems = metric_problems(alert_expressions(alerts_text))
    for group in load_yaml(alerts_text)["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            runbook = str((rule.get("annotations") or {}).get("runbook", ""))
            path, _, anchor = runbook.partition("#")
            if path != RUNBOOK or anchor != name.lower() or anchor not in anchors:
                problems.append(f"{ALERTS} {name}: no runbook section {RUNBOOK}#{name.lower()}")
            if (rule.get("labels") or {}).get("severity") not in ("warning", "critical"):
                problems.append(f"{ALERTS} {name}: severity must be warning or critical")
    return problems


def runbook_problems(runbook_text: str) -> list[str]:
    """Every SIMSTREAM_* name of the runbook is a setting (its commands are checked apart)."""
    return unknown_settings(SETTING.findall(runbook_text), RUNBOOK)


# --- the real files -----------------------------------------------------------------------


def _files() -> dict[str, str]:
    names = (COMPOSE, ENV_EXAMPLE, PROMETHEUS, ALERTS, DASHBOARD, DATASOURCE, RUNBOOK, GITIGNORE)
    acls = (path.relative_to(REPO).as_posix() for path in (REPO / "deploy/redis").glob("*.acl"))
    return {name: read(name) for name in (*names, *acls)}


def test_the_compose_file_parses_and_has_the_services_of_the_design() -> None:
    compose = load_yaml(read(COMPOSE))
    expected = {
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "redis-cache",
        "redis-celery",
        "topics",
        "index",
        "dispatcher",
        "worker",
        "worker-cpu",
        "beat",
        "prometheus",
        "grafana",
    }
    assert expected <= set(services(compose))
    assert services(compose)["kafka-2"]["profiles"] == ["ha"]
    assert services(compose)["worker-cpu"]["profiles"] == ["cpu"]


def test_the_compose_file_agrees_with_settings_ports_volumes_kafka_and_redis() -> None:
    assert compose_problems(_files()) == []


def test_every_metric_of_the_dashboard_is_exported_by_the_code() -> None:
    files = _files()
    assert dashboard_expressions(files[DASHBOARD])
    assert dashboard_problems(files[DASHBOARD], files[DATASOURCE]) == []


def test_the_dashboard_shows_what_operators_need() -> None:
    exprs = " ".join(e for _, e in dashboard_expressions(read(DASHBOARD)))
    for metric in (
        "simstream_embedded_items_total",  # ingest rate
        "simstream_items_lag_records",  # lag
        "simstream_freshness_seconds_bucket",  # freshness
        "simstream_api_request_seconds_bucket",  # query latency
        "simstream_cache_requests_total",  # cache hit ratio
        "simstream_index_items",  # shard sizes
    ):
        assert metric in exprs


def test_every_alert_uses_exported_metrics_and_has_a_runbook_section() -> None:
    files = _files()
    assert alert_expressions(files[ALERTS])
    assert alert_problems(files[ALERTS], files[RUNBOOK]) == []


def test_the_runbook_names_only_real_settings() -> None:
    assert runbook_problems(read(RUNBOOK)) == []


COMPOSE_COMMANDS = compose_commands(read(COMPOSE))
RUNBOOK_COMMANDS = runbook_commands(read(RUNBOOK), RUNBOOK)


@pytest.mark.parametrize(
    "command", COMPOSE_COMMANDS, ids=[f"{w}: {command_id(a)}" for w, a in COMPOSE_COMMANDS]
)
def test_every_simstream_command_compose_runs_is_a_real_cli_command(
    command: tuple[str, list[str]],
) -> None:
    assert cli_problems([command]) == []


@pytest.mark.parametrize(
    "command",
    sorted({tuple(a) for _, a in RUNBOOK_COMMANDS}),
    ids=lambda argv: command_id(list(argv)),
)
def test_every_simstream_command_of_the_runbook_is_a_real_cli_command(
    command: tuple[str, ...],
) -> None:
    assert cli_problems([(RUNBOOK, list(command))]) == []


# --- the checks bite ----------------------------------------------------------------------


MUTATIONS: list[tuple[str, str, str, str, Check, str]] = [
    # (id, file, old, new, check, expected fragment of a problem)
    (
        "misspelt setting in compose",
        COMPOSE,
        "SIMSTREAM_CELERY_BROKER_URL: ${",
        "SIMSTREAM_CELERY_BROKER: ${",
        compose_problems,
        "SIMSTREAM_CELERY_BROKER is not a setting",
    ),
    (
        "misspelt setting in .env.example",
        ENV_EXAMPLE,
        "# SIMSTREAM_LOG_LEVEL=",
        "# SIMSTREAM_LOGLEVEL=",
        compose_problems,
        "SIMSTREAM_LOGLEVEL is not a setting",
    ),
    (
        "missing command",
        COMPOSE,
        'command: ["simstream", "topics"]',
        'command: ["simstream", "topicz"]',
        lambda f: compose_command_problems(f[COMPOSE]),
        "simstream topicz",
    ),
    (
        "unknown option",
        COMPOSE,
        'command: ["simstream", "topics"]',
        'command: ["simstream", "topics", "--partitionz", "8"]',
        lambda f: compose_command_problems(f[COMPOSE]),
        "--partitionz",
    ),
    (
        "wrong API port in the health check",
        COMPOSE,
        "http://127.0.0.1:8000/healthz",
        "http://127.0.0.1:8080/healthz",
        compose_problems,
        "health check http://127.0.0.1:8080/healthz",
    ),
    (
        "probe on a route that does not exist",
        COMPOSE,
        "http://127.0.0.1:8000/healthz",
        "http://127.0.0.1:8000/health",
        compose_problems,
        "/health,",
    ),
    (
        "wrong metrics port scraped",
        PROMETHEUS,
        "names: [dispatcher]\n        type: A\n        port: 9100",
        "names: [dispatcher]\n        type: A\n        port: 9101",
        compose_problems,
        "dispatcher scraped on [9101]",
    ),
    (
        "API bound to loopback",
        COMPOSE,
        "SIMSTREAM_API_HOST: 0.0.0.0",
        "SIMSTREAM_API_HOST: 127.0.0.1",
        compose_problems,
        "must bind 0.0.0.0",
    ),
    (
        "unpinned image",
        COMPOSE,
        "image: redis:7.4.2-alpine",
        "image: redis:latest",
        compose_problems,
        "is not pinned",
    ),
    (
        "data dir moved away from the volumes",
        COMPOSE,
        "SIMSTREAM_DATA_DIR: /var/lib/simstream",
        "SIMSTREAM_DATA_DIR: /data",
        compose_problems,
        "no volume at the registry /data/models",
    ),
    (
        "two index nodes share one snapshot volume",
        COMPOSE,
        "- index-2-data:/var/lib/simstream\n",
        "- index-data:/var/lib/simstream\n",
        compose_problems,
        "share the snapshot volume",
    ),
    (
        "unclean leader election",
        COMPOSE,
        'KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE: "false"',
        'KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE: "true"',
        compose_problems,
        "unclean leader election is not disabled",
    ),
    (
        "ha layout with min.insync.replicas 1",
        ENV_EXAMPLE,
        "# [ha] KRAFT_MIN_INSYNC_REPLICAS=2",
        "# [ha] KRAFT_MIN_INSYNC_REPLICAS=1",
        compose_problems,
        "replication 3 / min ISR 1",
    ),
    (
        "cache URL with the Celery user",
        ENV_EXAMPLE,
        "SIMSTREAM_REDIS_CACHE_URL=redis://simstream-cache:",
        "SIMSTREAM_REDIS_CACHE_URL=redis://simstream-celery:",
        compose_problems,
        "not in redis-cache's ACL",
    ),
    (
        "cache user allowed to run scripts",
        "deploy/redis/cache.acl",
        " -@scripting",
        "",
        compose_problems,
        "lacks -@scripting",
    ),
    (
        "password out of step with the ACL hash",
        ENV_EXAMPLE,
        "dev-only-celery-password@redis-celery:6379/0",
        "other-password@redis-celery:6379/0",
        compose_problems,
        "does not match its ACL hash",
    ),
    (
        "a setting left out of .env.example",
        ENV_EXAMPLE,
        "# SIMSTREAM_API_TOKENS_CHECK_S=",
        "# SIMSTREAM_API_TOKENS_RECHECK=",
        compose_problems,
        "setting SIMSTREAM_API_TOKENS_CHECK_S is not documented",
    ),
    (
        "index node without its token secrets",
        COMPOSE,
        "    environment:\n      <<: *index-env\n      SIMSTREAM_NODE_ID: index-0\n"
        "      SIMSTREAM_NODE_URL: http://index:8000\n"
        "    secrets: [api-read-tokens, api-admin-tokens]\n"
        '    ports:\n      - "127.0.0.1:8000:8000"',
        '    ports:\n      - "127.0.0.1:8000:8000"',
        compose_problems,
        "service index: SIMSTREAM_API_READ_TOKENS_FILE='' is not a secret the service mounts",
    ),
    (
        "token file that is no mounted secret",
        COMPOSE,
        "SIMSTREAM_API_ADMIN_TOKENS_FILE: /run/secrets/api-admin-tokens",
        "SIMSTREAM_API_ADMIN_TOKENS_FILE: /var/lib/simstream/admin-tokens",
        compose_problems,
        "SIMSTREAM_API_ADMIN_TOKENS_FILE='/var/lib/simstream/admin-tokens' is not a secret",
    ),
    (
        "token secret kept beside the code",
        COMPOSE,
        "file: ./secrets/api-read-tokens",
        "file: ./deploy/api-read-tokens",
        compose_problems,
        "secret api-read-tokens file ./deploy/api-read-tokens is not under ./secrets/",
    ),
    (
        "inline tokens in .env.example",
        ENV_EXAMPLE,
        "# SIMSTREAM_API_READ_TOKENS=",
        "SIMSTREAM_API_READ_TOKENS=dev-token\n# was:",
        compose_problems,
        "SIMSTREAM_API_READ_TOKENS is set inline",
    ),
    (
        "token files not ignored by git",
        GITIGNORE,
        "/secrets/\n",
        "",
        compose_problems,
        "/secrets/ (the token files) is not ignored",
    ),
    (
        "two beats",
        COMPOSE,
        "    deploy:\n      replicas: 1\n",
        "    deploy:\n      replicas: 2\n",
        compose_problems,
        "beat with 2 replicas",
    ),
    (
        "health condition on a service without health check",
        COMPOSE,
        "      redis-celery:\n        condition: service_healthy\n\n  # --- monitoring",
        "      grafana:\n        condition: service_healthy\n\n  # --- monitoring",
        compose_problems,
        "grafana has no health check",
    ),
    (
        "unknown metric in an alert",
        ALERTS,
        "simstream_dlq_events_total[10m]",
        "simstream_deadletter_events_total[10m]",
        lambda f: alert_problems(f[ALERTS], f[RUNBOOK]),
        "simstream_deadletter_events_total is not exported",
    ),
    (
        "unknown label in a dashboard",
        DASHBOARD,
        'result=\\"hit\\"}',
        'outcome=\\"hit\\"}',
        lambda f: dashboard_problems(f[DASHBOARD], f[DATASOURCE]),
        "has no label 'outcome'",
    ),
    (
        "a dashboard panel on a fixed datasource",
        DASHBOARD,
        '"description": "",\n      "datasource": {\n        "type": "prometheus",\n'
        '        "uid": "${datasource}"',
        '"description": "",\n      "datasource": {\n        "type": "prometheus",\n'
        '        "uid": "prometheus"',
        lambda f: dashboard_problems(f[DASHBOARD], f[DATASOURCE]),
        "datasource 'prometheus'",
    ),
    (
        "a dashboard's instance variable on a fixed datasource",
        DASHBOARD,
        '"uid": "${datasource}"',
        '"uid": "prometheus"',
        lambda f: dashboard_problems(f[DASHBOARD], f[DATASOURCE]),
        "the instance variable must query ${datasource}",
    ),
    (
        "a dashboard series not scoped by the instance variable",
        DASHBOARD,
        'simstream_dlq_events_total{instance=~\\"$instance\\"}',
        "simstream_dlq_events_total",
        lambda f: dashboard_problems(f[DASHBOARD], f[DATASOURCE]),
        'simstream_dlq_events_total without instance=~"$instance"',
    ),
    (
        "a dashboard without its instance variable",
        DASHBOARD,
        '"name": "instance"',
        '"name": "host"',
        lambda f: dashboard_problems(f[DASHBOARD], f[DATASOURCE]),
        "no instance variable",
    ),
    (
        "unknown grouping label in an alert",
        ALERTS,
        "sum by (reason) (increase(simstream_dlq_events_total",
        "sum by (cause) (increase(simstream_dlq_events_total",
        lambda f: alert_problems(f[ALERTS], f[RUNBOOK]),
        "grouping label 'cause'",
    ),
    (
        "alert without a runbook section",
        ALERTS,
        "- alert: SimstreamCacheErrors",
        "- alert: SimstreamCacheFailures",
        lambda f: alert_problems(f[ALERTS], f[RUNBOOK]),
        "no runbook section",
    ),
    (
        "runbook names a setting that does not exist",
        RUNBOOK,
        "SIMSTREAM_SNAPSHOT_EVERY_S",
        "SIMSTREAM_SNAPSHOT_INTERVAL_S",
        lambda f: runbook_problems(f[RUNBOOK]),
        "SIMSTREAM_SNAPSHOT_INTERVAL_S is not a setting",
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


def test_the_ha_profile_runs_two_partition_sets_of_two_replicas_and_the_router() -> None:
    from workers.cluster.placement import derive_set

    compose = services(load_yaml(read(COMPOSE)))
    nodes = {
        name: service["environment"]
        for name, service in compose.items()
        if service.get("command") == ["simstream", "serve"]
    }
    ids = [env["SIMSTREAM_NODE_ID"] for env in nodes.values()]
    assert len(set(ids)) == len(ids) == 4
    assert sorted(derive_set(i, 2) for i in ids) == [0, 0, 1, 1]
    for name, env in nodes.items():
        assert env["SIMSTREAM_NODE_URL"] == f"http://{name}:8000"
    assert "# [ha] SIMSTREAM_PARTITION_SETS=2" in read(ENV_EXAMPLE).splitlines()
    router = compose["router"]
    assert router["command"] == ["simstream", "router"]
    assert router["profiles"] == ["ha"]
    assert "registry:/var/lib/simstream/models" in router["volumes"]
