"""Run the ``datapruning`` command line in-process and check its one-line errors."""

from __future__ import annotations

from datapruning.cli import main


def run_cli(capsys, *args):
    """Run ``datapruning ARGS`` in-process: (exit code, stdout, stderr lines)."""
    capsys.readouterr()  # drop what fixtures printed while setting up
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for fragment in fragments:
        assert fragment in err[0], err[0]
