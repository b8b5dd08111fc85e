"""`run_node.py backup | export | import`: copy, dump and load a data dir's chain.

* `backup --data-dir DIR DEST`: a consistent copy (chain/backup.py), read-only,
  while a node may run on DIR; a node starts from DEST.
* `export --data-dir DIR [--from H] [--to H] FILE`: blocks H..H (inclusive) in
  height order, one JSON object a line in wire format (chain/archive.py); `-` is
  stdout. Read-only, works while a node runs.
* `import --data-dir DIR --difficulty D FILE`: validated blocks appended through
  the chain store, under the data dir's lock (refused while a node runs).

Stdout carries only exported lines; what the command did goes to stderr. A bad
argument or a refusal is one `Error:` line and exit 2; a damaged data dir found
while reading is one line and exit 1.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

import click

from chain.archive import ArchiveError, DamagedRow, LineRefused, export_line, import_blocks, iter_blocks, open_readonly

EXIT_REFUSED = 2
EXIT_DAMAGED = 1
EXIT_PIPE = 1  # stdout closed before the end (`export - | head`): no message


class Refused(click.ClickException):
    """One `Error:` line on stderr and exit 2 (the operator asked for something that can't be done)."""

    exit_code = EXIT_REFUSED


class Damaged(click.ClickException):
    """One `Error:` line on stderr and exit 1 (the data dir is damaged where it was read)."""

    exit_code = EXIT_DAMAGED


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


DATA_DIR = click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="The node's data dir.")


@click.command(help="Copy a data dir (consistently, even while a node runs on it) into DEST, a new or empty directory.")
@DATA_DIR
@click.argument("dest", type=click.Path(path_type=Path))
def backup_command(data_dir: Path, dest: Path) -> None:
    from chain.backup import backup_data_dir

    try:
        result = backup_data_dir(data_dir, dest)
    except ArchiveError as exc:
        raise Refused(_one_line(str(exc))) from None
    at = "" if result.difficulty is None else f" at difficulty {result.difficulty}"
    click.echo(f"backed up {result.blocks} blocks{at} from {data_dir} to {dest} ({', '.join(result.files)}); "
               f"start a node on it with --data-dir {dest}", err=True)


@click.command(help="Write stored blocks in wire format, one JSON object a line, in height order, to FILE ('-': stdout).")
@DATA_DIR
@click.option("--from", "start", type=click.IntRange(0), default=0, show_default=True, help="First height to export.")
@click.option("--to", "end", type=click.IntRange(0), default=None, help="Last height to export (default: the top).")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def export_command(data_dir: Path, start: int, end: int | None, file: str) -> None:
    if end is not None and end < start:
        raise click.BadParameter(f"--to {end} is below --from {start}", param_hint="--to")
    try:
        conn = open_readonly(data_dir)
    except ArchiveError as exc:
        raise Refused(_one_line(str(exc))) from None
    blocks = iter_blocks(conn, start, None if end is None else end + 1)
    try:
        if file == "-":
            count, last, damage = _write(blocks, sys.stdout.buffer)
        else:
            count, last, damage = _write_file(blocks, Path(file))
    finally:
        blocks.close()
        conn.close()
    where = "stdout" if file == "-" else file
    span = f" (heights {start}..{last})" if count else ""
    if damage is not None:
        raise Damaged(_one_line(f"{damage}: exported the {count} blocks below it{span} to {where}"))
    click.echo(f"exported {count} blocks{span} from {data_dir} to {where}", err=True)


def _write(blocks: Iterator, out: BinaryIO) -> tuple[int, int, DamagedRow | None]:
    count, last = 0, -1
    damage = None
    try:
        try:
            for block in blocks:
                out.write(export_line(block))
                count, last = count + 1, block.height
        except DamagedRow as exc:
            damage = exc
        out.flush()
    except BrokenPipeError:  # `export - | head`: the reader has gone; end quietly, as `cat` would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(EXIT_PIPE) from None
    return count, last, damage


def _write_file(blocks: Iterator, path: Path) -> tuple[int, int, DamagedRow | None]:
    """Written under a temporary name and renamed when complete: FILE is never a cut-off export."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as out:
            result = _write(blocks, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except OSError as exc:
        try:
            partial.unlink()
        except OSError:
            pass
        raise Refused(_one_line(f"cannot write {path}: {exc.strerror or exc}")) from None
    return result


@click.command("import", help="Validate and append the blocks of FILE ('-': stdin), an export, to the data dir's chain. "
                              "Refused while a node runs on the data dir.")
@DATA_DIR
@click.option("--difficulty", type=click.IntRange(1, 64), required=True, help="Trailing zeros a block hash needs.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def import_command(data_dir: Path, difficulty: int, file: str) -> None:
    from chain.datadir import DataDir, DataDirError
    from chain.store import ChainStore

    try:
        locked = DataDir.open(data_dir, difficulty)  # refused while a node holds it, or at another difficulty
    except DataDirError as exc:
        raise Refused(_one_line(str(exc))) from None
    try:
        store = ChainStore(data_dir)
        try:
            with _open_input(file) as lines:
                result = import_blocks(store, lines, difficulty)
        except LineRefused as exc:
            kept = exc.result
            raise Refused(_one_line(
                f"{file} line {exc.line_no} refused: {exc.reason}; kept {_added(kept)} before it "
                f"(the data dir holds {kept.height} blocks)")) from None
        except ArchiveError as exc:
            raise Refused(_one_line(str(exc))) from None
        finally:
            store.close()
    except OSError as exc:
        raise Refused(_one_line(f"cannot read {file}: {exc.strerror or exc}")) from None
    finally:
        locked.close()
    click.echo(f"imported {_added(result)}, {result.already} already stored; "
               f"the data dir holds {result.height} blocks at difficulty {difficulty}", err=True)


def _added(result) -> str:
    if not result.added:
        return "0 new blocks"
    return f"{result.added} new blocks (heights {result.first_added}..{result.first_added + result.added - 1})"


class _open_input:
    """FILE's lines as bytes (stdin for '-')."""

    def __init__(self, file: str) -> None:
        self._file = file
        self._handle: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        self._handle = sys.stdin.buffer if self._file == "-" else open(self._file, "rb")
        return self._handle

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None and self._file != "-":
            self._handle.close()
