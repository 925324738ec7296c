"""`bench/gpu_embed.py`, the script a GPU machine runs once: it must still run here
(CPU, TensorFlow) and report both embed paths beside each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_script_reports_the_float_and_the_uint8_embed_paths(tmp_path: Path) -> None:
    out = tmp_path / "gpu_embed.json"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}

    subprocess.run(
        [sys.executable, "bench/gpu_embed.py", "--quick", "--repeats", "1", "--out", str(out)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )

    report = json.loads(out.read_text())
    assert report["backend"] == "tensorflow"
    assert [r["encoder"] for r in report["results"]] == ["cnn", "backbone (EfficientNetB0)"]
    for result in report["results"]:
        assert result["preprocess_items_per_s_per_core"] > 0
        assert [row["batch"] for row in result["rows"]]
        for row in result["rows"]:
            assert row["embed_items_per_s"] > 0
            assert row["embed_uint8_items_per_s"] > 0
