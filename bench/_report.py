"""Rendering a run: the stdout table, a progress line per case, and the PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._workloads import GENERATE_PHASES, PHASES, Sizes
from ragged_common import atomic

MIB = 2.0**20


def _num(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    value = float(value) / scale
    if value != 0 and (abs(value) >= 10**digits or abs(value) < 10 ** -(digits - 1)):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    text = lambda key: str(row.get(key) or "")  # noqa: E731  (records of older runs lack some params)
    return (
        text("device"), text("lengths"), text("cell"), _int(row.get("hidden")), text("state"), text("phase"),
        text("strategy"), _int(row.get("longest_step")),
    )


MEMORY_LABELS = {"peak_device_bytes": "device", "peak_tensor_bytes": "tensors", "peak_rss_bytes": "RSS"}


def memory_key(rows: list[dict[str, Any]]) -> str:
    """The one memory figure a table or plot shows for all its rows: allocator figures when any
    row has them (a GPU, ``--tensor-memory``; rows without them show none), else the RSS peak."""
    for key in ("peak_device_bytes", "peak_tensor_bytes"):
        if any(r.get(key) not in (None, "") for r in rows):
            return key
    return "peak_rss_bytes"


def _cells(row: dict[str, Any], memory_field: str) -> list[str]:
    memory = row.get(memory_field)
    status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row.get('message') or ''}"
    text = lambda key: "-" if row.get(key) in (None, "") else str(row[key])  # noqa: E731
    return [
        text("strategy"), text("cell"), text("hidden"), text("state"), text("phase"), text("longest_step"),
        text("lengths"), text("device"),
        _num(row.get("median_s"), 1e-3), _num(row.get("real_steps_per_s")), _num(row.get("tokens_per_s")),
        _num(row.get("samples_per_s")),
        _num(memory, MIB), _num(row.get("trace_s")), _num(row.get("gflop_per_s")),
        _num(row.get("matmul_peak_gflop_per_s")), _versus(row), status[:70],
    ]


def _versus(row: dict[str, Any]) -> str:
    """``1.12 x phase=train``: the case's median over its partner's, or ``-``."""
    if row.get("versus_ratio") in (None, ""):
        return "-"
    return f"{_num(row['versus_ratio'])} x {row.get('versus')}"


HEADERS = [
    "strategy", "cell", "H", "state", "phase", "L", "lengths", "device", "median ms", "real steps/s",
    "tokens/s", "samples/s", "peak MiB ({})", "trace s", "GFLOP/s", "matmul peak GFLOP/s", "vs partner", "status",
]


def table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of the rows, sorted by device, lengths, state, phase, strategy and L.

    ``peak MiB`` is one figure for all rows (see `memory_key`), named in its header.
    """
    key = memory_key(rows)
    headers = [h.format(MEMORY_LABELS[key]) for h in HEADERS]
    body = [_cells(r, key) for r in sorted(rows, key=_sort_key)]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, body)])


def progress_line(done: int, total: int, row: dict[str, Any]) -> str:
    """One line for a case that just ended."""
    case = f"{row['strategy']}-{row['state']}-{row['phase']}-L{row['longest_step']}-{row.get('cell')}-H{row.get('hidden')}"
    if row["status"] != "ok":
        return f"[{done}/{total}] {case}: {row['status']}: {row.get('message')}"
    key = memory_key([row])
    memory = row.get(key)
    versus = "" if row.get("versus_ratio") in (None, "") else f", {_versus(row)}"
    tokens = row.get("tokens_per_s") not in (None, "")
    rate = f"{_num(row['tokens_per_s'])} tokens/s" if tokens else f"{_num(row.get('real_steps_per_s'))} real steps/s"
    return (
        f"[{done}/{total}] {case}: {_num(row.get('median_s'), 1e-3)} ms, {rate}, "
        f"peak {_num(memory, MIB)} MiB ({MEMORY_LABELS[key]}){versus}"
    )


def title(run_id: str, rows: list[dict[str, Any]], sizes: Sizes | None = None) -> str:
    """The plot title: run id, length law, device, cells, hidden sizes and, when known, the sizes."""
    lengths = ",".join(sorted({str(r.get("lengths")) for r in rows}))
    devices = ",".join(sorted({str(r.get("device")) for r in rows}))
    cells = ",".join(sorted({str(r.get("cell") or "gru") for r in rows}))
    hidden = ",".join(str(h) for h in sorted({_int(r.get("hidden")) for r in rows if r.get("hidden")}))
    text = f"{run_id}: {lengths} lengths on {devices}; cells {cells}"
    if hidden:
        text += f", H {hidden}"
    if sizes is not None:
        text += f"; batch {sizes.batch}, T {sizes.timesteps}"
    return text


def series_label(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A plot line's label: the strategy, plus the cell and H when the rows have several."""
    label = str(row.get("strategy"))
    if len({r.get("cell") for r in rows}) > 1:
        label += f" {row.get('cell')}"
    if len({r.get("hidden") for r in rows}) > 1:
        label += f" H{row.get('hidden')}"
    return label


def _series(rows: list[dict[str, Any]], state: str, phase: str, metric: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        value = r.get(metric)
        if r["state"] != state or r["phase"] != phase or r["status"] != "ok" or value in (None, ""):
            continue
        out.setdefault(series_label(r, rows), []).append((_int(r["longest_step"]), float(value)))
    return {key: sorted(points) for key, points in sorted(out.items())}


def throughput_panel(phase: str) -> tuple[str, str, float, str]:
    """The throughput panel of `phase`: generated tokens per second in a generation phase, else
    real inner steps per second."""
    if phase in GENERATE_PHASES:
        return ("tokens_per_s", "generated tokens / s", 1.0, phase)
    return ("real_steps_per_s", "real inner steps / s", 1.0, phase)


def layout(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str, float, str]], list[str], dict]:
    """What `plot` draws, without matplotlib: the state columns, the panel rows `(metric, label,
    scale, phase)`, the series labels, and each panel's series by `(state, row)`."""
    states = sorted({r["state"] for r in rows}, key=str) or ["carry"]  # a record may lack its state
    phases = [p for p in PHASES if any(r["phase"] == p for r in rows)] or ["forward"]
    memory = memory_key(rows)
    panels = [throughput_panel(p) for p in phases]
    panels += [(memory, f"peak memory (MiB, {MEMORY_LABELS[memory]})", MIB, p) for p in phases]
    labels = sorted({series_label(r, rows) for r in rows})
    series = {(state, i): _series(rows, state, phase, metric)
              for state in states for i, (metric, _, _, phase) in enumerate(panels)}
    return states, panels, labels, series


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Saves a PNG: throughput and peak memory against `longest_step`.

    One column per state mode and one row per metric and phase (throughput of forward calls and
    train steps in real inner steps per second, of generation calls in generated tokens per
    second, then peak memory of each); one colour per strategy; log-log axes. Peak memory
    is that of the table (see `table`).

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states, panels, labels, series = layout(rows)
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(labels)}
    fig, axes = plt.subplots(len(panels), len(states), figsize=(6 * len(states), 3.4 * len(panels)), squeeze=False)
    for col, state in enumerate(states):
        for row_i, (_, label, scale, phase) in enumerate(panels):
            ax = axes[row_i][col]
            _panel(ax, series[(state, row_i)], colours, scale)
            ax.set_title(f"{state} state, {phase}: {label}")
            ax.set_ylabel(label)
    handles = [plt.Line2D([], [], color=colours[s], lw=2, marker="o", label=s) for s in labels]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.atomic_path(path, suffix=".png") as temporary:
            fig.savefig(temporary, dpi=100)
    finally:
        plt.close(fig)
    return path


def _panel(ax: Any, series: dict[str, list[tuple[int, float]]], colours: dict[str, Any], scale: float) -> None:
    import matplotlib.ticker

    for strategy, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, [y / scale for y in ys], color=colours[strategy], marker="o", ms=3)
    ax.set_xscale("log", base=2)
    ticks = sorted({x for points in series.values() for x, _ in points})
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if any(y > 0 for points in series.values() for _, y in points):  # a log axis needs one
        ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("longest_step L")
    ax.grid(True, which="both", alpha=0.3)
