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


def offline_env(tmp_path, monkeypatch) -> None:
    """Empty Resty/Keras/torch caches under ``tmp_path``, no downloads, no RESTY_DEBUG."""
    for var, sub in (("RESTY_HOME", "resty"), ("KERAS_HOME", "keras"), ("TORCH_HOME", "torch")):
        d = tmp_path / "_home" / sub
        d.mkdir(parents=True)
        monkeypatch.setenv(var, str(d))
    monkeypatch.setenv("RESTY_OFFLINE", "1")
    monkeypatch.delenv("RESTY_DEBUG", raising=False)
