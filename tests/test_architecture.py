"""The layers of docs/architecture.md hold in the code, and the page says what is checked."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c["layers"] for c in config["contracts"]}


def _documented_layers() -> list[list[str]]:
    """Each "layer (top to bottom)" table of the architecture page, as written there."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    tables: list[list[str]] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        if not lines or not lines[0].startswith("| layer (top to bottom)"):
            continue
        rows = [line.split("` |")[0] for line in lines[2:]]
        tables.append([row.removeprefix("| `").replace("\\|", "|") for row in rows])
    return tables


def _lint(config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(LINT_IMPORTS), "--no-cache"]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_architecture_page_lists_exactly_the_layers_the_contracts_check() -> None:
    contracts = _contracts()
    assert _documented_layers() == [contracts["layers"], contracts["workers"]]


def test_no_module_imports_a_layer_above_its_own() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_layer_check_sees_real_imports_and_reports_an_inverted_order(tmp_path: Path) -> None:
    """A control: with the order of the top-level layers reversed, the check must fail,
    so a green run above is not a check of nothing."""
    layers = list(reversed(_contracts()["layers"]))
    config = tmp_path / "inverted.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["simstream", "model", "producers", "workers", "bench"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "inverted"\n'
        'type = "layers"\n'
        f"layers = {layers!r}\n".replace("'", '"')
    )
    result = _lint(config)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "workers" in result.stdout
