"""The Dockerfiles install what pyproject.toml and the locks say, as a non-root user.

Every check returns a list of problems; each is run on the real files (expect none)
and, below, on mutated copies (expect the mutation to be reported).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from typing import Any

import pytest

from tests.deploy.checks import (
    SETTING,
    Check,
    assert_mutation_reported,
    cli_problems,
    default,
    read,
    settings_with,
    simstream_argv,
    unknown_settings,
)

CPU = "deploy/docker/Dockerfile"
CUDA = "deploy/docker/Dockerfile.cuda"
CUDA_CONSTRAINTS = "deploy/docker/constraints-cuda.txt"
DOCKERIGNORE = ".dockerignore"
PYPROJECT = "pyproject.toml"
CONSTRAINTS = "requirements/constraints.txt"
# The extras each image installs: none for the CPU image, the CUDA wheels for the other.
EXTRAS = {CPU: frozenset(), CUDA: frozenset({"gpu"})}
# Packages of pyproject.toml that the images leave out: the benchmarks.
NOT_IN_IMAGES = frozenset({"bench"})

Instruction = tuple[str, str]


# --- reading a Dockerfile -----------------------------------------------------------------


def instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages(steps: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage (global ARGs before the first FROM apart)."""
    out: list[list[Instruction]] = []
    for step in steps:
        if step[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


def arg_defaults(steps: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for name, rest in steps:
        if name == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            defaults[key.strip()] = value.strip()
    return defaults


def substitute(text: str, values: Mapping[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), m.group(0)), text
    )


def env_values(rest: str) -> dict[str, str]:
    """The KEY=value pairs of an ENV instruction."""
    return dict(word.split("=", 1) for word in shlex.split(rest) if "=" in word)


def exec_form(rest: str) -> list[str]:
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        return shlex.split(rest)
    return [str(v) for v in value] if isinstance(value, list) else []


def copy_sources(steps: list[Instruction]) -> list[str]:
    """Sources of COPY/ADD from the build context (not ``--from=`` another stage)."""
    sources = []
    for name, rest in steps:
        if name in ("COPY", "ADD") and "--from=" not in rest:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            sources += words[:-1]
    return sources


def pyproject() -> dict[str, Any]:
    return tomllib.loads(read(PYPROJECT))


# --- checks -------------------------------------------------------------------------------


def dockerfile_problems(path: str, text: str, project: Mapping[str, Any]) -> list[str]:
    """Pinned python:3.11 slim base, several stages, non-root final user, installs with the
    constraints and exactly the expected extras (never `dev`), every package copied,
    real settings, the settings' ports and directories."""
    steps = instructions(text)
    args = arg_defaults(steps)
    problems = []
    # base images
    bases = [substitute(rest.split()[0], args) for name, rest in steps if name == "FROM"]
    if len(bases) < 2:
        problems.append(f"{path}: not a multi-stage build")
    for image in bases:
        repository, _, tag = image.rpartition(":")
        if not repository.endswith("python") or not tag.startswith("3.11") or "slim" not in tag:
            problems.append(f"{path}: base image {image} is not python:3.11 slim")
        if tag == "latest" or not re.match(r"3\.11\.\d+", tag):
            problems.append(f"{path}: base image {image} is not pinned to a patch release")
    # final stage runs as a user of its own
    users = [rest for name, rest in (stages(steps) or [[]])[-1] if name == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"{path}: the final stage runs as root")
    # installs
    extras_known = set(project["project"].get("optional-dependencies", {}))
    extras_used: set[str] = set()
    for name, rest in steps:
        if name != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            if "pip install" in command and f"-c {CONSTRAINTS}" not in command:
                problems.append(f"{path}: `{command.strip()}` without -c {CONSTRAINTS}")
            if "pip install" in command:
                for group in re.findall(r"\.\[([^\]]*)\]", command):
                    extras_used |= {e.strip() for e in group.split(",") if e.strip()}
            extras_used |= set(re.findall(r"\['optional-dependencies'\]\['([^']+)'\]", command))
            if "apt-get install" in command:
                for package in command.split("apt-get install", 1)[1].split():
                    if not package.startswith("-") and "=" not in package:
                        problems.append(f"{path}: apt package {package} is not pinned")
    for extra in sorted(extras_used - extras_known):
        problems.append(f"{path}: extra {extra!r} is not in {PYPROJECT}")
    if "dev" in extras_used:
        problems.append(f"{path}: installs the dev extra")
    if extras_used != EXTRAS.get(path, extras_used):
        problems.append(
            f"{path}: installs extras {sorted(extras_used)}, expected {sorted(EXTRAS[path])}"
        )
    # the build context it needs
    sources = copy_sources(steps)
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {PYPROJECT, CONSTRAINTS, str(project["project"].get("readme", "README.md"))}
    needed |= {p.rstrip("*") for p in packages} - NOT_IN_IMAGES
    for item in sorted(needed):
        if not any(item in source.split() for source in sources):
            problems.append(f"{path}: does not copy {item}")
    # settings, ports, directories
    env: dict[str, str] = {}
    for name, rest in steps:
        if name == "ENV":
            env.update(env_values(rest))
    problems += unknown_settings(SETTING.findall(text), path)
    settings = settings_with(env)
    runs = " ".join(rest for name, rest in (stages(steps) or [[]])[-1] if name == "RUN")
    for directory in (settings.registry_dir, settings.snapshots_dir):
        if str(directory) not in runs:
            problems.append(f"{path}: the image does not create {directory} for the volumes")
    exposed = {int(p.split("/")[0]) for n, r in steps if n == "EXPOSE" for p in r.split()}
    wanted = {default("metrics_port")} | ({default("api_port")} if path == CPU else set())
    for port in sorted(wanted - exposed):
        problems.append(f"{path}: does not EXPOSE {port} (settings default)")
    if path == CPU and env.get("SIMSTREAM_API_HOST") not in (None, "0.0.0.0"):
        problems.append(f"{path}: SIMSTREAM_API_HOST must be 0.0.0.0 in a container")
    return problems


def dockerfile_commands(path: str, text: str) -> list[tuple[str, list[str]]]:
    """``simstream`` argvs of CMD and ENTRYPOINT."""
    commands = []
    for name, rest in instructions(text):
        if name in ("CMD", "ENTRYPOINT"):
            argv = simstream_argv(exec_form(rest))
            if argv is not None:
                commands.append((f"{path} {name}", argv))
    return commands


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "(?:/.*)?")


def ignored(path: str, ignore_text: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    result = False
    for raw in ignore_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        if _ignore_pattern(pattern).fullmatch(path.strip("/")):
            result = not negate
    return result


def dockerignore_problems(ignore_text: str, dockerfiles: Mapping[str, str]) -> list[str]:
    """What the Dockerfiles copy is in the context; secrets, local state and benchmarks are not."""
    problems = []
    for path, text in dockerfiles.items():
        for source in copy_sources(instructions(text)):
            if ignored(source, ignore_text):
                problems.append(f"{DOCKERIGNORE}: {source} is excluded but {path} copies it")
    for secret in (".env", ".git", ".venv", "var", "tests", *NOT_IN_IMAGES):
        if not ignored(secret, ignore_text):
            problems.append(f"{DOCKERIGNORE}: {secret} is sent to the build context")
    return problems


def cuda_constraint_problems(text: str) -> list[str]:
    """The extra lock pins only NVIDIA wheels, each to one version."""
    problems = []
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version or not name.startswith("nvidia-"):
            problems.append(f"{CUDA_CONSTRAINTS}: {line!r} is not an nvidia-*==version pin")
    return problems


def all_problems(files: Mapping[str, str]) -> list[str]:
    project = tomllib.loads(files[PYPROJECT])
    return [
        *dockerfile_problems(CPU, files[CPU], project),
        *dockerfile_problems(CUDA, files[CUDA], project),
        *dockerignore_problems(files[DOCKERIGNORE], {CPU: files[CPU], CUDA: files[CUDA]}),
        *cuda_constraint_problems(files[CUDA_CONSTRAINTS]),
    ]


# --- the real files -----------------------------------------------------------------------


def _files() -> dict[str, str]:
    return {name: read(name) for name in (CPU, CUDA, CUDA_CONSTRAINTS, DOCKERIGNORE, PYPROJECT)}


def test_both_dockerfiles_are_multi_stage_builds_ending_in_a_runtime_stage() -> None:
    for path in (CPU, CUDA):
        froms = [rest for name, rest in instructions(read(path)) if name == "FROM"]
        assert [f.split()[-1] for f in froms] == ["build", "runtime"], path


def test_the_dockerfiles_install_what_pyproject_and_the_locks_say() -> None:
    assert all_problems(_files()) == []


def test_the_cuda_image_uses_both_locks_on_every_install() -> None:
    for name, rest in instructions(read(CUDA)):
        if name == "RUN" and "pip install" in rest:
            assert f"-c {CONSTRAINTS}" in rest and f"-c {CUDA_CONSTRAINTS}" in rest


@pytest.mark.parametrize("path", [CPU, CUDA])
def test_the_command_of_each_image_is_a_real_cli_command(path: str) -> None:
    commands = dockerfile_commands(path, read(path))
    assert commands
    assert cli_problems(commands) == []


# --- the checks bite ----------------------------------------------------------------------


MUTATIONS: list[tuple[str, str, str, str, Check, str]] = [
    (
        "dev extra installed",
        CUDA,
        "'.[gpu]'",
        "'.[gpu,dev]'",
        all_problems,
        "installs the dev extra",
    ),
    (
        "extra that pyproject does not define",
        CUDA,
        "'.[gpu]'",
        "'.[cuda]'",
        all_problems,
        "extra 'cuda' is not in pyproject.toml",
    ),
    (
        "install without the constraints",
        CPU,
        "pip install -c requirements/constraints.txt . ",
        "pip install . ",
        all_problems,
        "`pip install .` without -c requirements/constraints.txt",
    ),
    (
        "unpinned base image",
        CPU,
        "ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm",
        "ARG PYTHON_IMAGE=python:latest",
        all_problems,
        "is not pinned",
    ),
    (
        "runs as root",
        CPU,
        "USER simstream",
        "USER root",
        all_problems,
        "the final stage runs as root",
    ),
    (
        "misspelt setting",
        CPU,
        "SIMSTREAM_API_HOST=0.0.0.0",
        "SIMSTREAM_APIHOST=0.0.0.0",
        all_problems,
        "SIMSTREAM_APIHOST is not a setting",
    ),
    (
        "wrong port exposed",
        CPU,
        "EXPOSE 8000 9100",
        "EXPOSE 8080 9100",
        all_problems,
        "does not EXPOSE 8000",
    ),
    (
        "a package left out",
        CUDA,
        "COPY workers workers\n",
        "",
        all_problems,
        "does not copy workers",
    ),
    (
        "unpinned apt package",
        CPU,
        "tini=0.19.0-1+b3",
        "tini",
        all_problems,
        "apt package tini is not pinned",
    ),
    (
        "README kept out of the context",
        DOCKERIGNORE,
        "CHANGELOG.md\n",
        "CHANGELOG.md\nREADME.md\n",
        all_problems,
        "README.md is excluded",
    ),
    (
        ".env sent to the build",
        DOCKERIGNORE,
        ".env\n",
        "",
        all_problems,
        ".env is sent to the build context",
    ),
    (
        "missing command",
        CPU,
        'CMD ["simstream", "--help"]',
        'CMD ["simstream", "serv", "--help"]',
        lambda f: cli_problems(dockerfile_commands(CPU, f[CPU])),
        "simstream serv",
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
