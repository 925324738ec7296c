"""`simstream bench …`: the reproducible benchmarks, which write JSON results and plots.

Each command imports its `bench` module inside, so ``simstream --help`` stays fast
and an installation without the `bench` package (the product images) still runs
every other command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from simstream.cli.common import (
    MnistDirOption,
    exit_on_error,
    load_settings,
    metrics_row,
    metrics_table,
)

bench_app = typer.Typer(
    help="Reproducible benchmarks that write JSON results and a plot.",
    no_args_is_help=True,
)

JsonOutOption = Annotated[Path, typer.Option(help="Where to write the JSON figures.")]


def register(app: typer.Typer) -> None:
    """Add the ``bench`` group to the CLI."""
    app.add_typer(bench_app, name="bench")


@contextmanager
def _needs_bench() -> Iterator[None]:
    """Exit 1 with a one-line message when the `bench` package is not installed."""
    try:
        yield
    except ModuleNotFoundError as e:
        if e.name != "bench":
            raise
        typer.echo(
            "error: the benchmarks (package `bench`) are not installed here; "
            "run them from a source checkout",
            err=True,
        )
        raise typer.Exit(1) from None


# --- model -------------------------------------------------------------------------


@bench_app.command("model")
def bench_model(
    mnist_dir: MnistDirOption = None,
    out: Annotated[Path, typer.Option(help="JSON results file; the plot goes next to it.")] = Path(
        "docs/bench/model_mnist.json"
    ),
    dataset: Annotated[
        str, typer.Option(help="Data set: mnist (its test set) or digits (scikit-learn).")
    ] = "mnist",
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds; one run (split and training) per seed.")
    ] = "0",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Override the benchmark's epochs.")
    ] = None,
    synthetic_classes: Annotated[
        str | None,
        typer.Option(
            help="Override the benchmark's synthetic classes: comma-separated transforms "
            "(rot90, rot270, hflip, …), or none."
        ),
    ] = None,
    validation: Annotated[
        bool,
        typer.Option(
            "--validation",
            help="Choose a configuration without the test's unseen classes: train on "
            "classes 0–3 and judge on 4–5; classes 6–9 are not read.",
        ),
    ] = False,
) -> None:
    """Train on classes 0–5; measure retrieval, open set and few shot on 6–9 against baselines."""
    settings = load_settings()
    if dataset not in ("mnist", "digits"):
        raise typer.BadParameter(
            f"Expected mnist or digits. Received: {dataset!r}", param_hint="--dataset"
        )
    seed_list = _ints(seeds, "--seeds", minimum=0)
    with exit_on_error():
        from dataclasses import replace

        with _needs_bench():
            from bench.model import (
                BENCHMARK_CONFIGS,
                TEST_CLASSES,
                VALIDATION_CLASSES,
                run_model_benchmark,
            )

        config = BENCHMARK_CONFIGS[dataset]
        if epochs is not None:
            config = replace(config, epochs=epochs)
        if synthetic_classes is not None:
            names = [n.strip() for n in synthetic_classes.split(",") if n.strip()]
            config = replace(config, synthetic_classes=tuple(n for n in names if n != "none"))
        report = run_model_benchmark(
            out, dataset, mnist_dir or settings.mnist_dir, config, seeds=seed_list,
            classes=VALIDATION_CLASSES if validation else TEST_CLASSES,
        )  # fmt: skip
        raw = report["baselines"]["raw_pixels"]
        rows = [metrics_row(name, report[name]) for name in ("seen", "unseen")]
        rows += [metrics_row(f"raw pixels {name}", raw[name]) for name in ("seen", "unseen")]
        typer.echo(metrics_table(rows, (1, 5, 10)))
        for name, figures in report["summary"].items():
            typer.echo(
                f"{name}: mean={figures['mean']:.4f} std={figures['std']:.4f} "
                f"min={figures['min']:.4f} max={figures['max']:.4f}"
            )
        typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


# --- index -------------------------------------------------------------------------


def _ints(text: str, name: str, minimum: int = 1) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or min(values) < minimum:
        raise typer.BadParameter(
            f"Expected a comma-separated list of integers ≥ {minimum}. Received: {text!r}",
            param_hint=name,
        )
    return values


@bench_app.command("index")
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
    shards: Annotated[str, typer.Option(help="Comma-separated shard counts.")] = "1,4,16",
    graphs: Annotated[
        str,
        typer.Option(
            help="Comma-separated index layouts: node (one graph for every shard, the "
            "default), partition (a graph per shard)."
        ),
    ] = "node",
    efs: Annotated[str, typer.Option(help="Comma-separated ef values of the recall sweep.")] = (
        "10,12,16,20,24,32,48,64,128,256"
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
    """Recall-matched QPS, upsert rates, latency under writes, snapshot time and memory."""
    settings = load_settings()
    with exit_on_error():
        with _needs_bench():
            from bench import index as benchmark
        from workers.index.config import IndexConfig

        names = tuple(d.strip() for d in datasets.split(",") if d.strip())
        layouts = tuple(g.strip() for g in graphs.split(",") if g.strip())
        if not layouts or set(layouts) - {"node", "partition"}:
            raise typer.BadParameter(
                f"Expected node and/or partition. Received: {graphs!r}", param_hint="--graphs"
            )
        config = benchmark.BenchmarkConfig(
            datasets=names,
            shards=_ints(shards, "--shards"),
            graphs=layouts,
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


# --- ingest ------------------------------------------------------------------------


@bench_app.command("ingest")
def bench_ingest(
    out: JsonOutOption = Path("docs/bench/ingest.json"),
    items: Annotated[int, typer.Option(min=100, help="Items published end to end.")] = 20000,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions = shards.")] = 4,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the encoder trained first.")] = 2,
    freshness_seconds: Annotated[
        float, typer.Option(help="Seconds of publishing at half rate for freshness.")
    ] = 10.0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep the stack's data and logs here.")
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(help="digits (8×8, a small CNN) or mnist (28×28, the model benchmark's CNN)."),
    ] = "digits",
    mnist_dir: MnistDirOption = None,
) -> None:
    """End-to-end ingest (publish → searchable) vs the encoder and hnswlib limits, one run.

    Starts its own embedded broker and Valkey on free ports, a Celery worker, the
    dispatcher and the index node; writes throughput (end to end, and steady: 10–90 %
    of the items applied), the limits, efficiency and freshness p50/p99 as JSON.
    """
    settings = load_settings()
    if dataset not in ("digits", "mnist"):
        raise typer.BadParameter(
            f"Expected digits or mnist. Received: {dataset!r}", param_hint="--dataset"
        )
    with _needs_bench():
        from bench.ingest import run

    with exit_on_error():
        result = run(
            out,
            items,
            partitions,
            epochs,
            freshness_seconds,
            work_dir,
            dataset=dataset,
            mnist_dir=mnist_dir or settings.mnist_dir,
        )
    typer.echo(json.dumps(result, indent=2))


# --- api ---------------------------------------------------------------------------


@bench_app.command("api")
def bench_api(
    out: JsonOutOption = Path("docs/bench/api.json"),
    items: Annotated[int, typer.Option(min=100, help="Random vectors indexed.")] = 20000,
    dim: Annotated[int, typer.Option(min=2, help="Vector size.")] = 64,
    concurrency: Annotated[int, typer.Option(min=1, help="Client threads of the QPS phases.")] = 4,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds per phase.")] = 5.0,
    ingest_rate: Annotated[
        float, typer.Option(min=1, help="Embedding records per second during the ingest phase.")
    ] = 2000.0,
) -> None:
    """HTTP lookups (uncached, cached, under ingest) vs the index searched directly and
    the HTTP floor (an app answering a fixed body under the same server and client).

    Starts its own embedded broker and Valkey on free ports, an index node and
    uvicorn in this process, and a load generator in a child process; writes QPS
    and p50/p99 latencies as JSON.
    """
    load_settings()
    with _needs_bench():
        from bench.api import run

    with exit_on_error():
        result = run(out, items, dim, concurrency, duration, ingest_rate)
    typer.echo(json.dumps(result, indent=2))


# --- cluster -----------------------------------------------------------------------


@bench_app.command("cluster")
def bench_cluster(
    out: JsonOutOption = Path("docs/bench/cluster.json"),
    items: Annotated[int, typer.Option(min=100, help="Random vectors indexed.")] = 100_000,
    dim: Annotated[int, typer.Option(min=2, help="Vector size.")] = 64,
    queries: Annotated[int, typer.Option(min=10, help="Queries of the recall check.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Client threads of the QPS phase.")] = 4,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds per load phase.")] = 5.0,
) -> None:
    """The query router over 1, 2 and 4 node processes holding the same items.

    RSS per node, recall@10 against exact search, router p50/p99 and QPS against
    the same shards searched in-process, and the failover after a SIGKILL of one
    of 2 × 2 replicas. Starts its own embedded broker and Valkey on free ports.
    """
    load_settings()
    with _needs_bench():
        from bench.cluster import run

    with exit_on_error():
        result = run(out, items, dim, queries, concurrency, duration)
    typer.echo(json.dumps(result, indent=2))


# --- abuse -------------------------------------------------------------------------


@bench_app.command("abuse")
def bench_abuse(
    out: JsonOutOption = Path("docs/bench/abuse.json"),
    items: Annotated[int, typer.Option(min=100, help="Random vectors indexed.")] = 100_000,
    rate: Annotated[
        float, typer.Option(min=1, help="Normal lookups per second, idle and under abuse.")
    ] = 20.0,
    idle: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds of normal load alone before the abuse (600 lookups at the default "
            "rate, so each p99 is the sixth slowest of at least 600).",
        ),
    ] = 30.0,
    filter_batches: Annotated[
        int, typer.Option(min=1, help="256-query batches of each filter phase.")
    ] = 2,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Least times the sequence of abuse phases runs; it repeats until the "
            "abuse has lasted as long as --idle.",
        ),
    ] = 5,
) -> None:
    """Normal lookups while a hostile client sends costly, stuck and oversized requests.

    Starts its own embedded broker and Valkey on free ports, an index node and
    uvicorn on 127.0.0.1 in this process, and the client in a child process; writes
    normal p99 (idle and under abuse), the slowest /healthz, RSS growth and the
    status counts per phase as JSON.
    """
    load_settings()
    with _needs_bench():
        from bench.abuse import run

    with exit_on_error():
        result = run(
            out, items, rate=rate, idle_s=idle, filter_batches=filter_batches, rounds=rounds
        )
    summary = {k: v for k, v in result.items() if k not in ("phases", "setup")}
    typer.echo(json.dumps(summary, indent=2))
