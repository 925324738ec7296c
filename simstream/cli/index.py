"""`simstream bench index`: the sharded index against one raw hnswlib index.

hnswlib and the index modules are imported inside the command, so ``--help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simstream.cli.common import exit_on_error, load_settings


def register(app: typer.Typer) -> None:
    """Add ``bench index`` to the ``bench`` group (created by the model commands)."""
    from simstream.cli.model import bench_app

    bench_app.command("index")(bench_index)


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise typer.BadParameter(
            f"Expected a comma-separated list of positive integers. Received: {text!r}",
            param_hint=name,
        )
    return values


def bench_index(
    out: Annotated[
        Path, typer.Option(help="JSON results file; the recall/QPS plot goes next to it (.png).")
    ] = Path("docs/bench/index.json"),
    mnist_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of MNIST IDX files (default: SIMSTREAM_MNIST_DIR)."),
    ] = None,
    datasets: Annotated[
        str, typer.Option(help="Comma-separated: mnist (PCA-64 of MNIST test), random.")
    ] = "mnist,random",
    shards: Annotated[str, typer.Option(help="Comma-separated shard counts.")] = "1,4",
    efs: Annotated[str, typer.Option(help="Comma-separated ef values of the recall sweep.")] = (
        "10,16,32,64,128,256"
    ),
    queries: Annotated[int, typer.Option(min=10, help="Held-out queries per dataset.")] = 1000,
    random_items: Annotated[
        int, typer.Option(min=100, help="Vectors in the random dataset (queries included).")
    ] = 10000,
    latency_queries: Annotated[
        int, typer.Option(min=10, help="Single queries timed per latency percentile.")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Recall@10, QPS, insert rate, latency under writes, snapshot time and memory."""
    settings = load_settings()
    with exit_on_error():
        from workers.index import benchmark
        from workers.index.config import IndexConfig

        names = tuple(d.strip() for d in datasets.split(",") if d.strip())
        config = benchmark.BenchmarkConfig(
            datasets=names,
            shards=_ints(shards, "--shards"),
            efs=_ints(efs, "--efs"),
            n_queries=queries,
            n_random=random_items,
            latency_queries=latency_queries,
            mnist_dir=mnist_dir or settings.mnist_dir,
            index=IndexConfig.from_settings(settings, dim=64),
            seed=seed,
        )
        report = benchmark.run(config, progress=progress)
        png = benchmark.write(report, out)
        typer.echo(benchmark.markdown_table(report))
        typer.echo(f"wrote {out} and {png}")
