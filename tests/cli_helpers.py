"""Shared by the CLI tests: run ``resty`` in-process and check a usage error's one line."""
from __future__ import annotations

from resty import cli


def run(argv, capsys):
    """``resty ARGV`` in this process: ``(exit status, stdout, stderr)``."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_usage_error(rc, err, *fragments):
    """Exit status 2, exactly one ``resty: error:`` line holding every fragment, no traceback."""
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("resty: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
