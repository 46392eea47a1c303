"""The report command: a markdown table with both tiers, JSON output, exit status."""
import json

from parity_tests import compare, tolerances
from parity_tests.__main__ import main, tolerance_table


def test_report_gram_both_tiers(tmp_path, capsys):
    out = tmp_path / "parity.json"
    rc = main(["--report", "--only", "gram", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "| quantity | dtype | pair | max abs diff | max rel diff | tolerance | pass |" in text
    data = json.loads(out.read_text())
    tiers = {(r["dtype"], r["pair"]) for r in data["rows"]}
    assert {d for d, _ in tiers} == set(tolerances.DTYPES)
    assert {p for _, p in tiers} == {"torch vs tf", "torch vs ref", "tf vs ref"}
    assert all(r["status"] == "pass" for r in data["rows"])


def test_markdown_marks_failures():
    rows = [compare.Row("q", "float64", "torch vs tf", 1.0, 0.5, "1e-10·scale", "FAIL", "x")]
    assert "❌ FAIL" in compare.markdown_table(rows)


def test_every_tolerance_has_a_reason():
    for (cat, dt), t in tolerances.TOLERANCES.items():
        assert t.reason, (cat, dt)
    for cat in tolerances.CATEGORIES:
        for dt in tolerances.DTYPES:
            tolerances.get(cat, dt)
    assert "reason" in tolerance_table()


def test_list_and_unknown(capsys):
    assert main(["--list"]) == 0
    assert "gram" in capsys.readouterr().out
    assert main(["--only", "no-such-quantity"]) == 2
