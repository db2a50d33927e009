"""`bench run` and `bench report`: throughput and memory of chain against its reference and peers."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import click

from bench import _report, _results, _runner, _workloads
from bench._workloads import ADDED_PEERS, BASELINE, CELLS, PEER_STRATEGIES, PHASES, REFERENCE, XLA_STRATEGIES, Sweep
from ragged_common import atomic
from ragged_common.bounds import INT32_MAX, UINT32_MAX
from ragged_common.checks import OptionError, check_int, check_int_list, check_number, check_subset
from ragged_common.cli import Choice, OneLineGroup, OutputDir, bad_parameter, checked

_INTS = checked(check_int_list, 1, INT32_MAX)  # steps and sizes reach TensorFlow as int32
_SECONDS = checked(check_number, 0, math.inf, open_low=True, expected="a finite number of seconds > 0")


def _count(low: int) -> Any:
    """The callback of an option counting something, at least `low`."""
    return checked(check_int, low, INT32_MAX)


def check_output_dir(path: Path, option: str) -> None:
    """Refuses, before anything is written, an output directory that cannot be made or written.

    `path` must be a directory or not exist yet, and its nearest existing ancestor must be a
    directory this process can create entries in (tried with a temporary directory, removed at
    once, so that read-only and virtual file systems such as /proc are caught too).

    Raises:
        click.BadParameter: naming `option`, the path and why.
    """
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"expected a directory; received {str(path)!r}, which is not one", param_hint=option)
    ancestor = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not ancestor.is_dir():
        raise click.BadParameter(
            f"expected a directory that can be made; received {str(path)!r}, whose parent {str(ancestor)!r} is not a directory",
            param_hint=option,
        )
    reason = atomic.cannot_create_in(ancestor)
    if reason is not None:
        raise click.BadParameter(
            f"expected a writable directory; received {str(path)!r} ({str(ancestor)!r}: {reason})", param_hint=option
        )


def known_strategies() -> tuple[str, ...]:
    """Every strategy name `--strategies` accepts."""
    from bench._tf_framework import chain_strategies

    chain_names = (*chain_strategies(), "auto")
    return (*chain_names, *(f"eager-{s}" for s in chain_names), *XLA_STRATEGIES, REFERENCE, BASELINE, *PEER_STRATEGIES)


def default_strategies() -> list[str]:
    """Chain's strategies, ``eager-auto`` (a plain eager call), ``reference`` and the generation
    baseline (which measures only the generation phases)."""
    from bench._tf_framework import chain_strategies

    return [*chain_strategies(), "eager-auto", REFERENCE, BASELINE]


def _strategies(value: str | None, peers: bool) -> list[str]:
    allowed = known_strategies()
    if value is None:
        names = default_strategies()
    else:
        try:
            names = check_subset("strategies", value, allowed)
        except OptionError as error:
            raise bad_parameter(error) from None  # checked late: the names come from chain
    names = [n for n in names if peers or n not in PEER_STRATEGIES]
    if peers:
        names += [n for n in ADDED_PEERS if n not in names]
    return names


def _device(value: str) -> str:
    from bench._tf_framework import gpu_count

    if value == "auto":
        return "gpu" if gpu_count() else "cpu"
    if value == "gpu" and not gpu_count():
        raise click.BadParameter(
            "TensorFlow sees no GPU on this machine; received 'gpu' (use cpu or auto)",
            param_hint="'--device'",
        )
    return value


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmarks of chained ragged models, saved where `pytest-benchmark compare` reads them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported


def _options_sweep(ctx: click.Context, opts: dict[str, Any]) -> Sweep:
    """Builds the sweep from `bench run`'s options, applying ``--quick`` to unset ones."""
    quick = opts["quick"]

    def pick(name: str, quick_value: Any) -> Any:
        source = ctx.get_parameter_source(name)
        explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        return opts[name] if explicit or not quick else quick_value

    q = _workloads.QUICK_SIZES
    sizes = dataclasses.replace(
        _workloads.DEFAULT_SIZES, batch=pick("batch", q.batch), timesteps=pick("timesteps", q.timesteps)
    )
    longest = pick("longest_steps", list(_workloads.QUICK_LONGEST_STEPS))
    strategies = _strategies(opts["strategies"], opts["peers"])
    if quick and opts["strategies"] is None:
        # The baseline, the fastest, the reference and the peers: tracing dominates a tiny sweep.
        strategies = [n for n in strategies if n not in _workloads.QUICK_LEFT_OUT]
    device = _device(opts["device"])
    _check_versus(opts["versus"])
    cases = _workloads.build_cases(
        strategies, opts["states"], opts["phases"], longest, opts["lengths"], device,
        reference_max_step=opts["reference_max_step"], cells=opts["cells"], hidden=opts["hidden"],
    )
    return Sweep(
        tuple(cases), sizes=sizes, rounds=pick("rounds", 2), warmup_rounds=opts["warmup_rounds"],
        seed=opts["seed"], threads=opts["threads"], timeout_s=opts["timeout"],
        tensor_memory=opts["tensor_memory"], passes=opts["passes"], versus=opts["versus"],
    )


def _versus(name: str, value: str) -> tuple[str, str]:
    field, sep, choice = value.partition("=")
    if not sep or field not in _workloads.VERSUS_FIELDS or not choice:
        raise OptionError(name, f"FIELD=VALUE with FIELD one of {', '.join(_workloads.VERSUS_FIELDS)}", value)
    return field, choice


def _check_versus(versus: tuple[str, str] | None) -> None:
    """Refuses a `--versus` value that names no phase, or no strategy of chain's."""
    if versus is None:
        return
    field, choice = versus
    # a partner runs in its case's process: a strategy partner is one of chain's
    others = (REFERENCE, BASELINE, *PEER_STRATEGIES)
    allowed = PHASES if field == "phase" else tuple(s for s in known_strategies() if s not in others)
    if choice not in allowed:
        error = OptionError("versus", f"{field}=VALUE with VALUE one of {', '.join(allowed)}", "=".join(versus))
        raise bad_parameter(error)


def _run_name(name: str, value: str) -> str:
    if not value or not all(ch.isalnum() or ch in "-_." for ch in value):
        raise OptionError(name, "letters, digits, '-', '_' or '.'", value)
    return value


def _default_name() -> str:
    return "bench_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")


def _render(rows: list[dict[str, Any]], run_dir: Path, title: str) -> Path:
    click.echo(_report.table(rows))
    return _report.plot(rows, run_dir / "plot.png", title)


def _execute(sweep: Sweep, files: _results.RunFiles, isolate: str) -> None:
    total = len(sweep.cases)

    def on_end(record: dict[str, Any]) -> None:
        files.add(record)
        ended = sum(len(v) for v in files.visits.values())
        line = _report.progress_line(ended, total * sweep.passes, _results.row(record))
        if sweep.passes > 1:
            line = f"pass {record.get('pass', 1)}/{sweep.passes} {line}"
        click.echo(line)

    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _interrupt) for sig in forwarded}
    try:
        _runner.run_sweep(sweep, files.run_dir / "work", on_end, isolate=isolate)
    except KeyboardInterrupt:
        if not files.records:
            raise click.ClickException(
                f"interrupted before any case ended; nothing to report in {files.run_dir}"
            ) from None
        raise click.ClickException(
            f"interrupted; the {len(files.records)} cases that ended are saved in {files.run_dir} "
            f"(render them with `bench report {files.run_dir}`)"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the running child is killed and saved cases stay
    # saved; SIGKILL cannot be caught, and there the child's death signal (see bench._runner) acts.
    raise KeyboardInterrupt


@main.command()
@click.option("--longest-steps", default="1,2,4,8,16,32,64", show_default=True, callback=_INTS,
              help="Comma-separated longest_step values L (--quick: 1,4).")
@click.option("--strategies", default=None,
              help="Comma-separated strategies: chain's (loop, padded, packed, auto), eager-NAME (a chain "
                   "strategy called eagerly, no user tf.function), xla-loop and xla-padded (compiled by XLA; "
                   "forward calls, and train steps for xla-padded), reference, per-sample (the generation "
                   "phases' baseline, one sample and one step at a time), torch-packed, torch-padded, jax, "
                   "jax-tf (the jax peer's program run by TensorFlow's XLA; forward calls and train steps). "
                   "Default: chain's, eager-auto, reference and per-sample.")
@click.option("--states", default="carry,reset", show_default=True,
              callback=checked(check_subset, ("carry", "reset", "init")),
              help="Comma-separated state modes.")
@click.option("--phases", default="forward,train", show_default=True, callback=checked(check_subset, PHASES),
              help="Comma-separated phases: forward calls, train steps (Adam) with training=True, and "
                   "train-notraining, the same train step calling the model without the flag, and "
                   "train-feedback, the train step of a feedback=True chain fed the targets (teacher "
                   "forcing); the last two for chain's strategies only. generate-greedy, "
                   f"generate-sampling ({_workloads.DECODERS['generate-sampling']}) and "
                   f"{_workloads.BEAM_PHASE} (a beam search of width {_workloads.BEAM_WIDTH}) generate "
                   "tokens with a token chain, timed in tokens/s, for chain's strategies and per-sample; "
                   "the first two for jax too.")
@click.option("--cells", default="gru", show_default=True, callback=checked(check_subset, CELLS),
              help="Comma-separated model B cells: gru (GRUCell), lstm (LSTMCell), rnn (SimpleRNNCell), "
                   "stacked (StackedRNNCells of 2 GRUCells), functional (a functional Model around one "
                   "SimpleRNNCell). The PyTorch and JAX peers use the same cell type.")
@click.option("--hidden", default="64", show_default=True, callback=_INTS,
              help="Comma-separated hidden sizes H of model A and model B.")
@click.option("--lengths", type=Choice(_workloads.LENGTH_LAWS), default="uniform", show_default=True,
              help="Length law: uniform on 0..L, or zipf (heavy tail clipped to L).")
@click.option("--device", type=Choice(_workloads.DEVICES), default="cpu", show_default=True,
              help="cpu, gpu, or auto (gpu when TensorFlow sees one). gpu without a GPU exits 2.")
@click.option("--quick", is_flag=True,
              help="Tiny sweep (about 2 minutes on 2 cores): L in 1,4, batch 16, T 8, 2 rounds, "
                   "strategies loop, packed, reference, torch-packed and jax; options given explicitly "
                   "still win.")
@click.option("--out", type=OutputDir(path_type=Path), default="bench-results", show_default=True,
              help="Directory of the run folders (results.json, results.csv, plot.png, logs).")
@click.option("--storage", type=OutputDir(path_type=Path), default=".benchmarks", show_default=True,
              help="pytest-benchmark storage directory (pass the same to `pytest-benchmark --storage`).")
@click.option("--save", "name", default=None, callback=checked(_run_name),
              help="Run name, saved as NNNN_NAME.json. Default: bench_<UTC time>.")
@click.option("--peers/--no-peers", default=True, show_default=True,
              help="Add the peer cases, PyTorch (torch-packed, torch-padded) and JAX (jax), skipped with the reason "
                   "when torch, or jax and optax, are missing. --no-peers drops every peer, jax-tf included.")
@click.option("--rounds", type=int, callback=_count(1), default=5, show_default=True,
              help="Timed rounds per case (--quick: 2).")
@click.option("--warmup-rounds", type=int, callback=_count(1), default=1, show_default=True,
              help="Untimed rounds after the first (tracing) call.")
@click.option("--passes", type=int, callback=_count(1), default=1, show_default=True,
              help="Visit every case this many times, each pass in the reverse order of the one "
                   "before, building it afresh and timing --rounds rounds; a case's figures pool "
                   "every visit. On a busy machine this spreads slow load changes over all cases "
                   "alike, so the ratios between cases hold.")
@click.option("--versus", default=None, callback=checked(_versus), metavar="FIELD=VALUE",
              help="Time each case round by round in turn with its partner, the same case with "
                   "FIELD (phase or strategy) set to VALUE, built in the same process, and record "
                   "versus_ratio, the case's median over the partner's. E.g. phase=train next to "
                   "train-feedback cases, strategy=loop next to chain's other strategies. Cases "
                   "without such a partner (themselves, or in another framework) are timed alone.")
@click.option("--timeout", type=float, callback=_SECONDS, default=300.0, show_default=True,
              help="Seconds a case may run before it is killed and recorded as a timeout.")
@click.option("--threads", type=int, callback=_count(1), default=2, show_default=True,
              help="CPU threads for TensorFlow and torch; JAX, which has no thread setting, runs on this many CPUs.")
@click.option("--batch", type=int, callback=_count(1), default=64, show_default=True, help="Batch size (--quick: 16).")
@click.option("--timesteps", type=int, callback=_count(1), default=32, show_default=True,
              help="Outer steps T (--quick: 8).")
@click.option("--reference-max-step", type=int, callback=_count(0), default=8, show_default=True,
              help="Largest L at which the slow loops run: the eager reference and the per-sample "
                   "generation baseline.")
@click.option("--isolate", type=Choice(_runner.ISOLATE), default="cell", show_default=True,
              help="One child process per case module, device, cell and hidden size (cell), per case module "
                   "and device (group: a child that ran many cases runs later ones slower), or per case (slower).")
@click.option("--seed", type=int, callback=checked(check_int, 0, UINT32_MAX), default=0, show_default=True,
              help="Seed of inputs and weights.")
@click.option("--tensor-memory", is_flag=True,
              help="Also record exact peak tensor bytes on the CPU (peak_tensor_bytes), through a counting "
                   "allocator that shifts timings by up to ~10%: take times from runs without it.")
@click.option("--dry-run", is_flag=True, help="List the cases and exit, running and writing nothing.")
@click.pass_context
def run(ctx: click.Context, **opts: Any) -> None:
    """Run a benchmark sweep and save it for `pytest-benchmark compare`.

    Each case runs as a pytest-benchmark case in a child process; a case that crashes, runs out
    of memory or passes --timeout is recorded with its reason and the sweep goes on. Results are
    saved as each case ends.
    """
    sweep = _options_sweep(ctx, opts)
    if not sweep.cases:
        raise click.UsageError(
            "the options select no case (reference and per-sample run only for L <= --reference-max-step, "
            "per-sample only in the generation phases, xla-loop only in forward calls, xla-padded in "
            "forward calls and train steps)"
        )
    check_output_dir(opts["out"], "'--out'")
    check_output_dir(opts["storage"], "'--storage'")
    if opts["dry_run"]:
        click.echo("\n".join(c.id for c in sweep.cases))
        click.echo(f"{len(sweep.cases)} cases; {_describe(sweep)}; nothing run or written (--dry-run)")
        return
    with _saving("cannot save the run"):
        files = _results.RunFiles.create(opts["out"], opts["storage"], opts["name"] or _default_name(), sweep)
    click.echo(f"{len(sweep.cases)} cases; run {files.run_id}; {_describe(sweep)}")
    _warn_if_busy(sweep.threads)
    with _saving(f"cannot save the run (the cases saved before are in {files.run_dir})"):
        files.save()
        _execute(sweep, files, opts["isolate"])
        rows = [_results.row(r) for r in files.records]
        plot = _render(rows, files.run_dir, _report.title(files.run_id, rows, sweep.sizes))
    _summary(rows, files, plot, opts["storage"])


@contextlib.contextmanager
def _saving(what: str) -> Iterator[None]:
    """Turns a failed write (a full disk, say) into one line: WHAT: FILE: REASON (exit 1).

    Every file is written through a temporary one and a rename, so the failed one is left as it was.
    """
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{what}: {where}{exc.strerror or exc}") from None


def _describe(sweep: Sweep) -> str:
    sizes = sweep.sizes
    cells = ",".join(dict.fromkeys(c.cell for c in sweep.cases))
    hidden = ",".join(str(h) for h in sorted({c.hidden for c in sweep.cases}))
    passes = f"; {sweep.passes} passes of {sweep.rounds} rounds" if sweep.passes > 1 else ""
    if sweep.versus is not None:
        passes += f"; round by round against {'='.join(sweep.versus)}"
    return (
        f"cells {cells}, hidden {hidden}; batch {sizes.batch}, T {sizes.timesteps}, "
        f"input {sizes.input_size}, output {sizes.output_size}{passes}"
    )


def _warn_if_busy(threads: int) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = (os.cpu_count() or 1) - load
    if free < threads:
        click.echo(
            f"warning: load average {load:.1f} on {os.cpu_count()} CPUs leaves fewer than --threads "
            f"{threads} free; timings will be noisy (recorded per case as load_avg_1m)"
        )


def _summary(rows: list[dict[str, Any]], files: _results.RunFiles, plot: Path, storage: Path) -> None:
    failed = [r for r in rows if r["status"] == "error"]
    click.echo(f"\nresults: {files.run_dir / 'results.json'}, {files.run_dir / 'results.csv'}, {plot}")
    click.echo(f"pytest-benchmark: {files.storage_file}")
    group = "param:cell" if len({r.get("cell") for r in rows}) > 1 else "param:longest_step"
    click.echo(f"compare: pytest-benchmark --storage {storage} compare {files.run_id[:4]} --group-by {group}")
    if failed:
        click.echo(f"{len(failed)} of {len(rows)} cases failed; their reasons are in the table and results.csv")
    if rows and len(failed) == len(rows):
        raise click.ClickException("every case failed")


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path), default=".benchmarks", show_default=True,
              help="pytest-benchmark storage to look RUN up in when it is a run id.")
@click.option("--out", type=OutputDir(path_type=Path), default=None,
              help="Where to write results.json, results.csv and plot.png. Default: the run folder, or "
                   "bench-results/RUN_ID for a pytest-benchmark file.")
def report(run_ref: str, storage: Path, out: Path | None) -> None:
    """Re-render the table, CSV, JSON and plot of a saved run.

    RUN is a run folder written by `bench run`, its results.json, a pytest-benchmark saved-run
    file, or a run id such as 0003 or 0003_bench_20260101_120000 looked up in --storage.
    """
    path = _resolve_run(run_ref, storage)
    try:
        run_id, records = _results.load_records(path)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(f"cannot read a run from {str(path)!r}: {exc}", param_hint="'RUN'") from None
    run_dir = out or (path if path.is_dir() else path.parent if path.name == "results.json" else Path("bench-results") / run_id)
    check_output_dir(run_dir, "'--out'")
    if not records:
        raise click.ClickException(
            f"{path} holds no case that ended (a run interrupted before any did); nothing to report"
        )
    rows = [_results.row(r) for r in records]
    with _saving("cannot save the report"):
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.atomic_write(run_dir / "results.csv", _results.to_csv(rows))
        if not (run_dir / "results.json").exists() or out is not None:
            document = json.dumps({"run_id": run_id, "records": records}, indent=2)
            atomic.atomic_write(run_dir / "results.json", document)
        plot = _report.plot(rows, run_dir / "plot.png", _report.title(run_id, rows))
    click.echo(_report.table(rows))
    click.echo(f"\nresults: {run_dir / 'results.json'}, {run_dir / 'results.csv'}, {plot}")


def _resolve_run(run_ref: str, storage: Path) -> Path:
    path = Path(run_ref)
    try:
        if path.exists():
            return path
    except OSError as exc:  # a name too long, say
        raise click.BadParameter(f"cannot look at {run_ref!r} ({exc.strerror or exc})", param_hint="'RUN'") from None
    is_id = bool(run_ref) and all(ch.isalnum() or ch in "-_." for ch in run_ref)  # no glob pattern
    matches = sorted(storage.glob(f"*/{run_ref}*.json")) if is_id and storage.is_dir() else []
    if len(matches) != 1:
        found = ("no saved run matches" if not matches else f"{len(matches)} saved runs match") if is_id else (
            "no such file, and no run id")
        raise click.BadParameter(
            f"expected a run folder, a results or pytest-benchmark JSON file, or a run id in {storage}; "
            f"received {run_ref!r} ({found})",
            param_hint="'RUN'",
        )
    return matches[0]


if __name__ == "__main__":
    main()
