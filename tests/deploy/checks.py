"""What every deployment check shares: the settings, the CLI and the metrics, as the code has them.

Each check is a function that returns a list of problems (empty: all good), so the
tests can run it on the real files and on mutated copies. Nothing here starts a
container: the files are parsed, and the facts they depend on are taken from the
code itself (`Settings`, the Typer app, the Prometheus registry).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from simstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]

SETTING = re.compile(r"\bSIMSTREAM_[A-Z0-9_]+\b")
METRIC = re.compile(r"\b(simstream_[a-z0-9_]+)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
LABEL_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
SHELL_SEPARATORS = frozenset({"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1"})
# Target labels Prometheus adds to every series (Kubernetes discovery adds namespace/pod).
PROMETHEUS_LABELS = frozenset({"instance", "job", "namespace", "pod", "__name__"})


# --- settings -----------------------------------------------------------------------------

#: Where the API's bearer tokens come from: files that rotate (wired from secrets) ...
TOKEN_FILES = ("SIMSTREAM_API_READ_TOKENS_FILE", "SIMSTREAM_API_ADMIN_TOKENS_FILE")
#: ... and inline values, which neither rotate nor belong in deployment files.
INLINE_TOKENS = ("SIMSTREAM_API_READ_TOKENS", "SIMSTREAM_API_ADMIN_TOKENS")


def setting_names() -> frozenset[str]:
    """Every environment variable `Settings` reads."""
    return frozenset(Settings.env_names())


def default(field: str) -> Any:
    """The built-in default of a setting, without reading the environment or ``.env``."""
    return Settings.model_fields[field].get_default(call_default_factory=True)


def settings_with(env: Mapping[str, str]) -> Settings:
    """Settings from ``env`` (``SIMSTREAM_*`` keys) and the defaults, never the environment.

    Every field is passed explicitly, so neither the test process' environment nor a
    ``.env`` file can change the result.
    """
    values = {name: default(name) for name in Settings.model_fields}
    values.update(
        {
            name.removeprefix("SIMSTREAM_").lower(): value
            for name, value in env.items()
            if name in setting_names()
        }
    )
    return Settings(**values)


def unknown_settings(names: Iterable[str], where: str) -> list[str]:
    """A problem for each ``SIMSTREAM_*`` name that is not a setting."""
    known = setting_names()
    return [
        f"{where}: {name} is not a setting of simstream/settings.py"
        for name in sorted(set(names))
        if name.startswith("SIMSTREAM_") and name not in known
    ]


# --- CLI ----------------------------------------------------------------------------------


def simstream_argv(command: str | Iterable[str]) -> list[str] | None:
    """The arguments given to ``simstream`` in a command line, or None when it runs none.

    ``command`` is an argv list or a shell string; shell operators end the command.
    """
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    for i, word in enumerate(words):
        if i and words[i - 1] in ("-n", "--namespace"):
            continue  # kubectl's namespace, not the command
        if word == "simstream" or word.endswith("/bin/simstream"):
            argv: list[str] = []
            for rest in words[i + 1 :]:
                if rest in SHELL_SEPARATORS:
                    break
                argv.append(rest)
            return argv
    return None


@functools.cache
def _invoke_help(argv: tuple[str, ...]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from simstream.cli.main import app

    result = CliRunner().invoke(app, [*argv, "--help"])
    text = re.sub(r"[│╭╮╰╯─]", " ", result.output)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return result.exit_code, lines[-1] if lines else ""


def cli_problems(commands: Iterable[tuple[str, list[str]]]) -> list[str]:
    """A problem for each ``simstream`` argv the Typer app rejects.

    Each argv is run with ``--help`` appended: the command and sub-command must exist
    and every option it names must be one the command has (values are not checked:
    ``--help`` exits before they are converted).
    """
    problems = []
    for where, argv in commands:
        code, message = _invoke_help(tuple(argv))
        if code != 0:
            problems.append(
                f"{where}: `simstream {' '.join(argv)}` is not accepted by the CLI "
                f"(exit {code}): {message}"
            )
    return problems


def command_id(argv: list[str]) -> str:
    """A short test id: the command (and sub-command) without options and values."""
    words = []
    for word in argv:
        if word.startswith("-"):
            break
        words.append(word)
    return " ".join(words[:2]) or "simstream"


# --- metrics ------------------------------------------------------------------------------

_SERIES_SUFFIXES: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "counter": (("_total", frozenset()), ("_created", frozenset())),
    "gauge": (("", frozenset()),),
    "histogram": (
        ("_bucket", frozenset({"le"})),
        ("_sum", frozenset()),
        ("_count", frozenset()),
        ("_created", frozenset()),
    ),
    "summary": (
        ("", frozenset({"quantile"})),
        ("_sum", frozenset()),
        ("_count", frozenset()),
        ("_created", frozenset()),
    ),
    "info": (("_info", frozenset()),),
}


@functools.cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Every series name simstream exports, with its label names.

    Names come from the Prometheus registry once ``workers.metrics`` is imported
    (families of simstream's own metrics, with the suffixes Prometheus adds per
    type); label names from the metric objects of that module.
    """
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    import workers.metrics

    labels = {
        value._name: frozenset(value._labelnames)
        | frozenset(workers.metrics.INFO_KEYS.get(value._name, ()))
        for value in vars(workers.metrics).values()
        if isinstance(value, MetricWrapperBase)
    }
    series: dict[str, frozenset[str]] = {}
    for family in REGISTRY.collect():
        if family.name not in labels:
            continue
        for suffix, extra in _SERIES_SUFFIXES.get(family.type, (("", frozenset()),)):
            series[family.name + suffix] = labels[family.name] | extra
    return series


def metric_problems(expressions: Iterable[tuple[str, str]]) -> list[str]:
    """A problem for each ``simstream_*`` series, matcher label or grouping label unknown.

    Series must be exported by ``workers/metrics.py``; labels in ``{...}`` matchers
    must be labels of that series; labels in ``by (...)``/``without (...)``/``on (...)``
    must be labels of some simstream series of the same expression (or Prometheus' own
    ``instance``/``job``).
    """
    metrics = exported_metrics()
    problems = []
    for where, expr in expressions:
        in_expr: set[str] = set(PROMETHEUS_LABELS)
        for match in METRIC.finditer(expr):
            name, selector = match.group(1), match.group(2) or ""
            if name not in metrics:
                problems.append(f"{where}: {name} is not exported by workers/metrics.py")
                continue
            in_expr |= metrics[name]
            for label in LABEL_MATCHER.findall(selector):
                if label not in metrics[name] | PROMETHEUS_LABELS:
                    problems.append(
                        f"{where}: {name} has no label {label!r} "
                        f"(labels: {', '.join(sorted(metrics[name])) or 'none'})"
                    )
        if not METRIC.search(expr):
            continue
        for group in GROUPING.findall(expr):
            for label in (part.strip() for part in group.split(",")):
                if label and label not in in_expr and not label.startswith("<<"):
                    problems.append(
                        f"{where}: grouping label {label!r} is on none of its simstream series"
                    )
    return problems


# --- API routes ---------------------------------------------------------------------------


@functools.cache
def probe_routes() -> frozenset[str]:
    """Paths of the API's health router: what probes and Prometheus may call."""
    from workers.api.health import router

    return frozenset(str(getattr(route, "path", "")) for route in router.routes)


# --- files --------------------------------------------------------------------------------


def read(relative: str) -> str:
    """Text of a file of the repository."""
    return (REPO / relative).read_text(encoding="utf-8")


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=64)
def _parse(text: str) -> str:
    return json.dumps([doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None])


def load_yaml(text: str) -> Any:
    """One YAML document (anchors and merge keys resolved), as a fresh object."""
    docs = json.loads(_parse(text))
    return docs[0] if docs else None


def load_yaml_all(text: str) -> list[Any]:
    """Every non-empty document of a multi-document YAML text, as fresh objects."""
    return list(json.loads(_parse(text)))


def walk_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a parsed YAML/JSON tree, with a dotted path to it."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk_strings(item, f"{path}[{i}]")


def is_within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or inside it (POSIX paths)."""
    a, b = Path(path), Path(directory)
    return a == b or b in a.parents


# --- the runbook --------------------------------------------------------------------------

FENCE = re.compile(r"^[ \t]*```[a-z]*\n(.*?)^[ \t]*```", re.M | re.S)


def runbook_commands(markdown: str, where: str) -> list[tuple[str, list[str]]]:
    """``simstream`` argvs of the fenced code blocks of a Markdown text."""
    commands = []
    for block in FENCE.findall(markdown):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            try:
                argv = simstream_argv(line)
            except ValueError:
                continue
            if argv is not None:
                commands.append((where, argv))
    return commands


def heading_anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a Markdown text."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            anchors.add(title.replace(" ", "-"))
    return anchors


Check = Callable[[dict[str, str]], list[str]]


def assert_mutation_reported(
    files: dict[str, str], file: str, old: str, new: str, check: Check, expected: str
) -> None:
    """Apply one mutation to a copy of ``files`` and assert ``check`` reports it."""
    assert old in files[file], f"the mutation no longer applies to {file}: {old!r}"
    files[file] = files[file].replace(old, new, 1)
    problems = check(files)
    assert any(expected in p for p in problems), problems
