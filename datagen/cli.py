"""The ``datagen`` command: ``datagen make``, ``datagen inspect``, ``datagen merge`` and ``datagen import``."""

from __future__ import annotations

from typing import Any, Callable

import click

from ragged_common.checks import OptionError, check_int
from ragged_common.cli import OneLineGroup, OutputDir, bad_parameter, checked

from . import _api, _import, _inspect, _make
from ._errors import DatasetError
from ._params import DEFAULTS, FORMATS, LENGTHS, TASKS

_OPTION_OF = {"n_samples": "--samples", "directories": "DIRS",
              "sizes": "--timesteps/--input-size/--output-size/--longest-step/--teacher-hidden"}  # fmt: skip


def _run(action: Callable[[], Any]) -> Any:
    """Runs library code, turning its errors into one-line click errors (no traceback)."""
    try:
        return action()
    except OptionError as error:
        raise bad_parameter(error, _OPTION_OF.get(error.name)) from None
    except DatasetError as error:
        raise click.ClickException(error.cli_message or str(error)) from None


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ragged-chain", prog_name="datagen")
def main() -> None:
    """Make and inspect datasets of inputs with known ragged targets."""


@main.command()
@click.option("--task", default=DEFAULTS["task"], show_default=True, help=f"Target law: {', '.join(TASKS)}.")
@click.option("--samples", "n_samples", type=int, default=DEFAULTS["n_samples"], show_default=True,
              help="Samples in the dataset.")
@click.option("--timesteps", type=int, default=DEFAULTS["timesteps"], show_default=True, help="Outer steps T per sample.")
@click.option("--input-size", type=int, default=DEFAULTS["input_size"], show_default=True,
              help="Features per outer step.")
@click.option("--output-size", type=int, default=DEFAULTS["output_size"], show_default=True,
              help="Features per inner step.")
@click.option("--longest-step", type=int, default=DEFAULTS["longest_step"], show_default=True,
              help="Clip L of every length.")
@click.option("--lengths", default=DEFAULTS["lengths"], show_default=True, help=f"Length law: {', '.join(LENGTHS)}.")
@click.option("--zero-fraction", type=float, default=DEFAULTS["zero_fraction"], show_default=True,
              help="Share of steps set to 0, in [0, 1].")
@click.option("--noise", type=float, default=DEFAULTS["noise"], show_default=True, help="Std of Gaussian target noise.")
@click.option("--seed", type=int, default=DEFAULTS["seed"], show_default=True, help="Root seed (>= 0).")
@click.option("--teacher-hidden", type=int, default=DEFAULTS["teacher_hidden"], show_default=True,
              help="Units of the teacher's GRUs.")
@click.option("--vocab-size", type=int, default=DEFAULTS["vocab_size"], show_default=True,
              help="Tokens V of the token tasks, in [2, 256] (they ignore --output-size and --noise).")
@click.option("--out", type=OutputDir(), default=DEFAULTS["out"], show_default=True, help="Dataset directory.")
@click.option("--format", "file_format", default=DEFAULTS["format"], show_default=True,
              help=f"Shard format: {', '.join(FORMATS)}.")
@click.option("--shard-size", type=int, default=DEFAULTS["shard_size"], show_default=True, help="Samples per shard.")
@click.option("--workers", type=int, default=DEFAULTS["workers"], show_default=True, help="Parallel worker processes.")
@click.option("--num-shards", type=int, default=DEFAULTS["num_shards"], show_default=True,
              help="Slices K of the dataset (one per machine).")
@click.option("--shard-index", type=int, default=DEFAULTS["shard_index"], show_default=True,
              help="Slice i in [0, K) to make.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run, re-making missing or corrupt shards.")
def make(file_format: str, **options: Any) -> None:
    """Generate a dataset: shards, truth files and manifest.json in --out.

    The same parameters and seed give the same content for any --workers, --shard-size or
    slicing. With --num-shards K --shard-index i, each of K jobs makes one contiguous slice of
    the shards and its own manifest.slice-i-of-K.json; `datagen merge` then joins them.

    A run holds --out locked until it ends (the K slices of one dataset may run at once). Exit
    status: 0 done; 2 a bad option, sizes that cannot fit in memory (or plainly not on the disk),
    or an --out that cannot be written, with nothing written; 1 another run is writing --out
    (nothing written), a disk is full ("no space left while writing FILE"; finish with --resume)
    or a stored file is bad.
    """
    manifest = _run(lambda: _api.make(**options, format=file_format, progress=True))
    counts = manifest["counts"]
    click.echo(f"wrote {counts['samples']} samples ({counts['real_steps']} real inner steps) in "
               f"{counts['shards']} shard(s) to {options['out']}")  # fmt: skip


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--verify", is_flag=True, help="Check every file's sha256.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw one sample to this PNG.")
@click.option("--sample", type=int, default=0, show_default=True, help="The sample --plot draws.")
def inspect(directory: str, verify: bool, plot_path: str | None, sample: int) -> None:
    """Print a dataset's counts, length histogram, padding ratio and noise floor.

    Exit status: 0 done; 2 a bad option (--plot must end in .png, in an existing directory;
    --sample must be one of the dataset's), checked before anything is printed; 1 the dataset is
    missing, corrupt or hostile (the message names the file).
    """
    if plot_path is not None:
        _run(lambda: _inspect.check_plot_path(plot_path))
        _run(lambda: _inspect.check_sample(directory, sample))
    click.echo(_run(lambda: _inspect.summary(directory, verify)))
    if plot_path is not None:
        _run(lambda: _inspect.plot(directory, plot_path, sample))
        click.echo(f"plot of sample {sample} written to {plot_path}")


@main.command()
@click.argument("directories", nargs=-1, required=True, metavar="DIRS...", type=click.Path(file_okay=False))
@click.option("--out", type=OutputDir(), default=None, help="Merged dataset directory (default: the only DIRS given).")
def merge(directories: tuple[str, ...], out: str | None) -> None:
    """Join the slices made with --num-shards/--shard-index into one manifest.json.

    DIRS hold the slices (one shared directory, or one per job). Every shard is verified by
    sha256 and copied into --out when it lives elsewhere.
    """
    manifest = _run(lambda: _make.merge(*directories, out=out))
    click.echo(f"merged {manifest['counts']['shards']} shards ({manifest['counts']['samples']} samples) "
               f"into {out or directories[0]}")  # fmt: skip


@main.group("import", cls=OneLineGroup)
def import_group() -> None:
    """Import real data into datagen's format, for the same readers and `chain`."""


@import_group.command("chorales")
@click.option("--out", type=OutputDir(), default="chorales-data", show_default=True, help="Dataset directory.")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False),
              help="A folder of .mxl/.xml/.musicxml files; default: music21's own corpus (music21/corpus/bach).")
@click.option("--chorales", help="Import only these ids (file names without suffix), comma-separated.")
@click.option("--limit", type=int, callback=checked(check_int, 1),
              help="Import only the first N chorales (by file name) of those chosen.")
@click.option("--window", type=int, default=_import.DEFAULT_WINDOW, show_default=True,
              help="Beats T per sample (a quarter note each).")
@click.option("--end-token", is_flag=True, help="End each beat's run with the end token 1 (for chain.EndToken(1)).")
@click.option("--format", "file_format", default=DEFAULTS["format"], show_default=True,
              help=f"Shard format: {', '.join(FORMATS)}.")
@click.option("--shard-size", type=int, default=DEFAULTS["shard_size"], show_default=True, help="Samples per shard.")
@click.option("--workers", type=int, default=DEFAULTS["workers"], show_default=True,
              help="Processes reading chorales in parallel.")
@click.option("--overwrite", is_flag=True, help="Replace the dataset in --out (the whole directory).")
def chorales(file_format: str, **options: Any) -> None:
    """Import Bach's chorales: the soprano's notes, beat by beat, over the lower voices.

    One outer step is one beat (a quarter note); x[b, t] holds what the alto, tenor and bass
    sound at its onset, its place in the bar, a fermata flag and the key; its inner steps are
    the soprano's notes and rests that begin in it, one (pitch, duration) token each, so a held
    note gives a beat no step. A sample is a window of --window beats of one chorale. The
    held-out chorales' windows are the last 10% of the samples, the split that datagen.read,
    datagen.load and `chain fit` make by default. Chorales that cannot be read (no four voices, another
    metre, a file that does not parse) are skipped; the manifest records each chorale's file and
    sha256, those skipped and why, and the held-out baselines this prints.

    Needs music21: pip install 'ragged-chain[music]'. The same files give the same bytes, and
    --out is written whole or not at all. Exit status: 0 done; 2 a bad option (a --corpus that
    does not exist, unknown --chorales, an --out that holds other files), nothing written; 1
    music21 is missing, fewer than two chorales could be read, or --out cannot be written.
    """
    try:
        manifest = _run(lambda: _import.import_chorales(**options, format=file_format, progress=True))
    except ModuleNotFoundError as error:
        raise click.ClickException(str(error)) from None
    click.echo(_import.report(manifest, options["out"]))


if __name__ == "__main__":
    main()
