"""The scaffold of the evaluation command-line tools (``python -m tts.evaluate``,
``python -m audio_gen.evaluate``): what they share besides their judges.

- inputs: ``<utt> <value>`` lists (:func:`read_scp`) and ``result.json`` files
  (:func:`read_result_json`);
- outputs: ``result.json`` and per-utterance files written atomically (:func:`write_result_json`,
  :func:`write_rows`), a Markdown table (:func:`markdown_table`) printed and optionally saved
  (:func:`emit_table`);
- the command line: ``--num_threads`` (:func:`add_threads_argument`, :func:`set_threads`), the
  ``table`` subcommand's options and row names (:func:`add_table_command`, :func:`table_names`),
  comma-separated values (:func:`split_csv`) and the entry point that turns an input error into
  one ``<prog>: error: ...`` line and exit status 2 (:func:`run_cli`); the generation CLIs'
  (``tts.bin.synthesize``, ``audio_gen.bin.generate``) one-line errors with exit status 1
  (:func:`run_reporting_input_errors`).

Part of the base layer (:mod:`nar.base`): torch and the standard library only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nar.base.files import write_json, write_lines, write_text
from nar.base.kaldi import read_kaldi_map
from nar.base.lock import DirectoryLockedError

__all__ = ["RESULT_FILE", "add_table_command", "add_threads_argument", "emit_table", "markdown_table",
           "read_result_json", "read_scp", "run_cli", "set_threads", "split_csv", "table_names",
           "write_result_json", "write_rows"]

PathLike = str | os.PathLike
#: the summary file every evaluation writes into its output directory
RESULT_FILE = "result.json"
#: what a table cell shows for a missing value
MISSING = "–"


# --------------------------------------------------------------------------- inputs

def read_scp(path: PathLike, error: type[Exception] = ValueError) -> dict[str, str]:
    """``<utt> <value>`` lines (``wav.scp``, ``text``, ``prompt.scp``) -> ``{utt: value}`` in
    file order; blank lines are skipped.

    Raises:
        ``error``: the file is missing or has no entries, a duplicate utt, an utt without a
            value; the message names the file (and the line).
    """
    return read_kaldi_map(str(path), skip_blank_lines=True, require_entries=True, error=error)


def read_result_json(path: PathLike, error: type[Exception] = ValueError,
                     missing: type[Exception] = FileNotFoundError) -> dict[str, Any]:
    """A ``result.json`` -> its JSON object.

    Raises:
        ``missing``: no such file; ``error``: not valid JSON or not a JSON object. Both name
            the file.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(f"{path}: result file not found")
    text = path.read_text(encoding="utf-8")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(result, dict):
        raise error(f"{path}: expected a JSON object, got {type(result).__name__}")
    return result


# --------------------------------------------------------------------------- outputs

def write_result_json(out_dir: PathLike, result: Mapping[str, Any]) -> Path:
    """``out_dir/result.json`` (indented, atomically; ``out_dir`` created); returns its path."""
    path = Path(out_dir) / RESULT_FILE
    write_json(path, dict(result), indent=2)
    return path


def write_rows(path: PathLike, lines: Iterable[str]) -> Path:
    """Per-utterance lines (``predictions.jsonl``, ``per_utt.tsv``) written atomically."""
    write_lines(path, lines)
    return Path(path)


def _cell_text(value: Any) -> str:
    # a '|' in a row name would start a new column
    return MISSING if value is None else str(value).replace("|", "/")


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]], right_align: bool = False) -> str:
    """A Markdown table: ``head`` and one line per row (cells as given, already formatted;
    None shows as ``–``); ``right_align``: every column but the first is right-aligned.

    Raises:
        ValueError: a row with another number of cells than ``head`` (its index is named).
    """
    rule = "---:|" if right_align else "---|"
    lines = ["| " + " | ".join(head) + " |", "|---|" + rule * (len(head) - 1)]
    for i, row in enumerate(rows):
        if len(row) != len(head):
            raise ValueError(f"row {i} has {len(row)} cells for {len(head)} columns ({', '.join(head)})")
        lines.append("| " + " | ".join(_cell_text(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def emit_table(table: str, out: PathLike | None = None) -> None:
    """Print ``table`` to stdout and, with ``out``, also write it there (atomically)."""
    print(table, end="")
    if out is not None:
        write_text(out, table)


# --------------------------------------------------------------------------- command line

def split_csv(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def add_threads_argument(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """``--num_threads``: the number of torch threads (0: torch's default)."""
    parser.add_argument("--num_threads", type=int, default=default,
                        help="torch threads (0: torch's default; default: %(default)s)")


def set_threads(num_threads: int) -> None:
    """Use ``num_threads`` torch threads; 0 leaves torch's default."""
    if num_threads < 0:
        raise ValueError(f"--num_threads must be >= 0, got {num_threads}")
    if num_threads:
        torch.set_num_threads(num_threads)


def add_table_command(sub: Any, func: Callable[[argparse.Namespace], int],
                      names_default: str) -> argparse.ArgumentParser:
    """The ``table`` subcommand: ``--results`` (result.json files), ``--names`` (row names),
    ``--out`` (also write the table there); ``names_default`` says where unnamed rows get
    their names. Returns the subparser for command-specific options."""
    t = sub.add_parser("table", help="a markdown table of several result.json files")
    t.add_argument("--results", type=Path, nargs="+", required=True)
    t.add_argument("--names", default=None, help=f"comma-separated row names (default: {names_default})")
    t.add_argument("--out", type=Path, default=None, help="also write the table here")
    t.set_defaults(func=func)
    return t


def table_names(names: str | None, results: Sequence[PathLike], defaults: Sequence[str],
                error: type[Exception] = ValueError) -> list[str]:
    """The row names of ``table``: ``--names`` split at commas, or ``defaults``; one per result.

    Raises:
        ``error``: the number of names differs from the number of ``--results`` files.
    """
    out = split_csv(names) if names else list(defaults)
    if len(out) != len(results):
        raise error(f"--names gives {len(out)} names for {len(results)} --results files")
    return out


def run_cli(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            logger: logging.Logger) -> int:
    """Parse ``argv``, set up logging and run ``args.func(args)``; an input error
    (``ValueError``, ``FileNotFoundError``) becomes one line ``<prog>: error: <message>`` on
    stderr and exit status 2 (its traceback at debug level)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if hasattr(args, "num_threads"):
            set_threads(args.num_threads)
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        logger.debug("input error", exc_info=True)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def run_reporting_input_errors(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                               logger: logging.Logger) -> int:
    """``run(args)``, where bad input (``ValueError``, ``OSError``, a directory another process
    writes) becomes one line ``<prog>: error: <message>`` on stderr (a multi-line message joined,
    its traceback at debug level) and exit status 1: the generation CLIs' ``main``."""
    try:
        return run(args)
    except (ValueError, OSError, DirectoryLockedError) as e:
        logger.debug("traceback of the error", exc_info=True)
        print(f"{prog}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 1
