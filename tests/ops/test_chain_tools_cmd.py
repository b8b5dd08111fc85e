"""`run_node.py backup | export | import` as an operator runs them, beside a running node."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from chain.datadir import LOCK_FILENAME, DataDir
from chain.store import DB_FILENAME, ChainStore
from ops.chain_tools_cmd import export_command, import_command
from sim.chains import make_chain
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
CHAIN = make_chain(25, 2)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_node.py", *map(str, args)], cwd=ROOT, capture_output=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


def invoke(command, *args: str):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def stored(path: Path, blocks) -> None:
    with DataDir.open(path, 2):
        store = ChainStore(path)
        try:
            store.replace_from(0, blocks)
        finally:
            store.close()


def test_backup_and_export_while_a_node_runs_and_a_node_starts_from_the_backup(make_node, tmp_path):
    node = make_node()
    keeper = node.ctx.registry.proxy("ChainKeeper")
    assert keeper.apply_segment(0, CHAIN).get(timeout=10)
    data_dir, dest = Path(node.config.data_dir), tmp_path / "backup"

    backup = run_cli("backup", "--data-dir", data_dir, dest)
    assert backup.returncode == 0, backup.stderr
    assert "backed up 25 blocks at difficulty 2" in backup.stderr.decode()
    assert not (dest / LOCK_FILENAME).exists()

    export = run_cli("export", "--data-dir", data_dir, "--from", 20, "-")
    assert export.returncode == 0, export.stderr
    assert [json.loads(line) for line in export.stdout.splitlines()] == [b.to_wire() for b in CHAIN[20:]]

    refused = run_cli("import", "--data-dir", data_dir, "--difficulty", 2, tmp_path / "none.jsonl")
    assert refused.returncode == 2  # the file does not exist: refused before anything else
    (tmp_path / "empty.jsonl").write_bytes(b"")
    locked = run_cli("import", "--data-dir", data_dir, "--difficulty", 2, tmp_path / "empty.jsonl")
    assert locked.returncode == 2
    assert "is in use by pid" in one_error_line(locked)

    assert keeper.tip().get(timeout=5) == (25, CHAIN[-1].hash)  # the running node was not disturbed
    restored = make_node(data_dir=dest)
    wait_for(lambda: restored.ctx.registry.proxy("ChainKeeper").tip().get(timeout=5) == (25, CHAIN[-1].hash), timeout=30)


def test_backup_refuses_a_dest_that_is_not_empty(tmp_path):
    stored(tmp_path / "d", CHAIN)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "x").write_text("x")
    result = run_cli("backup", "--data-dir", tmp_path / "d", tmp_path / "dest")
    assert result.returncode == 2
    assert "exists and is not empty" in one_error_line(result)
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["x"]


def test_export_ranges_inclusive_to_a_file(tmp_path):
    stored(tmp_path / "d", CHAIN)
    out = tmp_path / "out.jsonl"
    result = invoke(export_command, "--data-dir", tmp_path / "d", "--from", 3, "--to", 7, out)
    assert result.exit_code == 0
    assert [json.loads(line) for line in out.read_bytes().splitlines()] == [b.to_wire() for b in CHAIN[3:8]]
    result = invoke(export_command, "--data-dir", tmp_path / "d", "--to", 1, out)
    assert [json.loads(line)["height"] for line in out.read_bytes().splitlines()] == [0, 1]
    result = invoke(export_command, "--data-dir", tmp_path / "d", "--from", 5, "--to", 2, out)
    assert result.exit_code == 2 and "--to 2 is below --from 5" in result.output


def test_import_refuses_the_first_bad_line_with_its_number_and_keeps_the_prefix(tmp_path):
    lines = [json.dumps(b.to_wire(), separators=(",", ":")) for b in CHAIN]
    lines[10] = lines[10].replace('"nonce":"', '"nonce":"x')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    result = run_cli("import", "--data-dir", tmp_path / "d", "--difficulty", 2, bad)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "line 11 refused: block 10: hash does not match" in line
    assert "the data dir holds 10 blocks" in line
    store = ChainStore(tmp_path / "d")
    try:
        assert store.load_range(0, 100) == CHAIN[:10]
    finally:
        store.close()


def test_import_refuses_a_data_dir_at_another_difficulty(tmp_path):
    stored(tmp_path / "d", CHAIN)
    export = tmp_path / "chain.jsonl"
    assert invoke(export_command, "--data-dir", tmp_path / "d", export).exit_code == 0
    result = run_cli("import", "--data-dir", tmp_path / "d", "--difficulty", 3, export)
    assert result.returncode == 2
    assert "at difficulty 2, not 3" in one_error_line(result)


def test_round_trip_is_identical_and_import_is_idempotent(tmp_path):
    stored(tmp_path / "a", CHAIN)
    first, second, head = tmp_path / "first.jsonl", tmp_path / "second.jsonl", tmp_path / "head.jsonl"
    assert invoke(export_command, "--data-dir", tmp_path / "a", "--to", 9, head).exit_code == 0
    assert invoke(export_command, "--data-dir", tmp_path / "a", first).exit_code == 0

    result = invoke(import_command, "--data-dir", tmp_path / "b", "--difficulty", 2, head)
    assert result.exit_code == 0 and "imported 10 new blocks (heights 0..9)" in result.output
    result = invoke(import_command, "--data-dir", tmp_path / "b", "--difficulty", 2, first)  # extends
    assert result.exit_code == 0 and "imported 15 new blocks (heights 10..24), 10 already stored" in result.output
    before = (tmp_path / "b" / DB_FILENAME).read_bytes()
    result = invoke(import_command, "--data-dir", tmp_path / "b", "--difficulty", 2, first)  # again: nothing changes
    assert result.exit_code == 0 and "imported 0 new blocks, 25 already stored" in result.output
    assert (tmp_path / "b" / DB_FILENAME).read_bytes() == before

    assert invoke(export_command, "--data-dir", tmp_path / "b", second).exit_code == 0
    assert second.read_bytes() == first.read_bytes()
    assert len(first.read_bytes().splitlines()) == 25


def test_bad_arguments_are_one_error_line_and_exit_2(tmp_path):
    for args in (["backup", "--data-dir", tmp_path / "none", tmp_path / "dest"],
                 ["export", "--data-dir", tmp_path / "none", "-"],
                 ["import", "--data-dir", tmp_path / "d", tmp_path / "f"]):
        result = run_cli(*args)
        assert result.returncode == 2, args
        errors = [line for line in result.stderr.decode().splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr.decode(), result.stderr


def test_export_of_a_damaged_data_dir_writes_the_prefix_and_names_the_row(tmp_path):
    stored(tmp_path / "d", CHAIN)
    db = sqlite3.connect(tmp_path / "d" / DB_FILENAME)
    db.execute("UPDATE blocks SET messages = '[\"b7\"}' WHERE height = 7")
    db.commit()
    db.close()
    out = tmp_path / "out.jsonl"
    result = invoke(export_command, "--data-dir", tmp_path / "d", out)
    assert result.exit_code == 1
    assert "stored block 7 is damaged (messages is not JSON): exported the 7 blocks below it" in result.output
    assert [json.loads(line) for line in out.read_bytes().splitlines()] == [b.to_wire() for b in CHAIN[:7]]


def test_import_over_a_damaged_stored_chain_is_one_line_not_a_traceback(tmp_path):
    stored(tmp_path / "d", CHAIN[:10])
    db = sqlite3.connect(tmp_path / "d" / DB_FILENAME)
    db.execute("UPDATE blocks SET messages = '[\"b3\"}' WHERE height = 3")
    db.commit()
    db.close()
    export = tmp_path / "chain.jsonl"
    export.write_text("".join(json.dumps(b.to_wire()) + "\n" for b in CHAIN))
    result = run_cli("import", "--data-dir", tmp_path / "d", "--difficulty", 2, export)
    assert result.returncode == 2
    assert "stored blocks 0..9 can't all be read" in one_error_line(result)
