"""nar.base.evalcli: the scaffold of the evaluation CLIs — readers, writers, the Markdown table
and the entry point that turns input errors into one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

from nar.base import evalcli


class MyError(ValueError):
    pass


def test_read_scp_skips_blank_lines(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("a /x/a.wav\n\nb  /x/b c.wav \n")
    assert evalcli.read_scp(scp) == {"a": "/x/a.wav", "b": "/x/b c.wav"}


@pytest.mark.parametrize("text, message", [
    ("a 1\na 2\n", r"wav\.scp:2: duplicate key 'a'"),
    ("a\n", r"wav\.scp:1: key 'a' has no value"),
    ("\n\n", r"wav\.scp: no entries"),
    (None, r"wav\.scp: file missing"),
])
def test_read_scp_errors_name_the_file_and_line(tmp_path, text, message):
    scp = tmp_path / "wav.scp"
    if text is not None:
        scp.write_text(text)
    with pytest.raises(MyError, match=message):
        evalcli.read_scp(scp, error=MyError)


def test_result_json_round_trip_and_errors(tmp_path):
    path = evalcli.write_result_json(tmp_path / "eval", {"name": "réel", "wer": 1.5})
    assert path == tmp_path / "eval" / "result.json"
    assert evalcli.read_result_json(path) == {"name": "réel", "wer": 1.5}
    assert not list((tmp_path / "eval").glob(".*.tmp"))  # written atomically, nothing left behind
    with pytest.raises(FileNotFoundError, match=r"gone\.json: result file not found"):
        evalcli.read_result_json(tmp_path / "gone.json")
    with pytest.raises(MyError, match=r"gone\.json: result file not found"):
        evalcli.read_result_json(tmp_path / "gone.json", missing=MyError)
    path.write_text("{oops")
    with pytest.raises(MyError, match=r"result\.json: not valid JSON"):
        evalcli.read_result_json(path, error=MyError)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"result\.json: expected a JSON object, got list"):
        evalcli.read_result_json(path)


def test_write_rows(tmp_path):
    out = evalcli.write_rows(tmp_path / "d" / "rows.jsonl", (json.dumps({"utt": u}) for u in "ab"))
    assert out.read_text().splitlines() == ['{"utt": "a"}', '{"utt": "b"}']


def test_markdown_table():
    rows = [["a|b", "1", None], ["c", "2.5", "x"]]
    assert evalcli.markdown_table(["system", "n", "v"], rows) == (
        "| system | n | v |\n|---|---|---|\n| a/b | 1 | – |\n| c | 2.5 | x |\n")
    assert evalcli.markdown_table(["system", "n"], [["a", 3]], right_align=True).splitlines()[1] == "|---|---:|"
    with pytest.raises(ValueError, match=r"row 1 has 1 cells for 2 columns \(system, n\)"):
        evalcli.markdown_table(["system", "n"], [["a", 1], ["b"]])


def test_emit_table_prints_and_writes(tmp_path, capsys):
    evalcli.emit_table("| t |\n", tmp_path / "sub" / "t.md")
    assert capsys.readouterr().out == "| t |\n" and (tmp_path / "sub" / "t.md").read_text() == "| t |\n"
    evalcli.emit_table("| u |\n")
    assert capsys.readouterr().out == "| u |\n"


def test_split_csv_and_table_names(tmp_path):
    assert evalcli.split_csv(" a, b,,c ") == ["a", "b", "c"]
    results = [tmp_path / "x" / "result.json", tmp_path / "y" / "result.json"]
    assert evalcli.table_names(None, results, ["x", "y"]) == ["x", "y"]
    assert evalcli.table_names("gt, tts", results, ["x", "y"]) == ["gt", "tts"]
    with pytest.raises(MyError, match="--names gives 1 names for 2 --results files"):
        evalcli.table_names("only", results, ["x", "y"], error=MyError)


def _parser(seen):
    p = argparse.ArgumentParser(prog="prog")
    evalcli.add_threads_argument(p, default=1)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--fail", default=None)

    def run(args):
        seen.append(torch.get_num_threads())
        if args.fail == "value":
            raise ValueError("data/x: broken")
        if args.fail == "other":
            raise RuntimeError("a bug")
        return 0

    r.set_defaults(func=run)
    def table(args):
        seen.append((args.results, args.names, args.out, args.extra))
        return 0

    t = evalcli.add_table_command(sub, table, "the dir names")
    t.add_argument("--extra", default=None)
    return p


def test_run_cli_threads_errors_and_table_command(capsys):
    seen, before = [], torch.get_num_threads()
    log = logging.getLogger("test_evalcli")
    try:
        assert evalcli.run_cli("prog", _parser(seen), ["--num_threads", "1", "run"], log) == 0
        assert seen == [1]
        assert evalcli.run_cli("prog", _parser(seen), ["run", "--fail", "value"], log) == 2
        assert capsys.readouterr().err.strip().endswith("prog: error: data/x: broken")
        with pytest.raises(RuntimeError, match="a bug"):  # a bug is not an input error
            evalcli.run_cli("prog", _parser(seen), ["run", "--fail", "other"], log)
        assert evalcli.run_cli("prog", _parser(seen), ["--num_threads", "-1", "run"], log) == 2
        assert "--num_threads must be >= 0, got -1" in capsys.readouterr().err
        assert evalcli.run_cli("prog", _parser(seen), ["table", "--results", "a", "b", "--names", "x,y",
                                                       "--extra", "e"], log) == 0
        assert seen[-1] == ([Path("a"), Path("b")], "x,y", None, "e")
    finally:
        torch.set_num_threads(before)
