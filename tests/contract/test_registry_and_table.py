"""The contract suite's reach: every threat and defence class in the source is registered (a module nobody
imports would silently leave the audit), and the README's format table is the one the suite checks."""
import ast
import pathlib
import subprocess
import sys

from .kinds import readme_table

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "mlwarden"
ROOT = SRC.parents[1]


def declared(package: str) -> dict[str, str]:
    """name -> file of every class in the package decorated with `@register` that sets its name."""
    out = {}
    for path in sorted((SRC / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(d, "id", getattr(d, "attr", None)) == "register"
                                                      for d in node.decorator_list):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "name" for t in stmt.targets)
                            and isinstance(stmt.value, ast.Constant)):
                        out[stmt.value.value] = path.relative_to(SRC).as_posix()
    return out


def registered() -> tuple[set[str], set[str]]:
    """The registry as a fresh interpreter sees it through the entry points, nothing else imported."""
    code = ("from mlwarden.core.registry import all_threats, all_defenses;"
            "print(','.join(all_threats())); print(','.join(all_defenses()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    threats, defenses = r.stdout.strip().splitlines()
    return set(threats.split(",")), set(defenses.split(","))


def test_every_threat_and_defence_class_is_registered():
    threats, defenses = registered()
    found_t, found_d = declared("threats"), declared("defenses")
    assert len(found_t) >= 40 and len(found_d) >= 20   # the scan itself finds the classes
    missing = {n: f for n, f in found_t.items() if n not in threats}
    missing |= {n: f for n, f in found_d.items() if n not in defenses}
    assert not missing, f"declared but not registered (a module nobody imports?): {missing}"


def test_the_scan_finds_a_class_that_is_not_imported(tmp_path, monkeypatch):
    """The check above can fail: a threat module written but never imported is reported."""
    folder = tmp_path / "threats"
    folder.mkdir()
    (folder / "forgotten.py").write_text("@register\nclass Forgotten(Threat):\n    name = 'forgotten'\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert declared("threats") == {"forgotten": "threats/forgotten.py"}


def test_the_readme_format_table_is_the_one_the_suite_checks():
    readme = (ROOT / "README.md").read_text()
    assert readme_table() in readme, "regenerate it: python -c 'from tests.contract.kinds import readme_table; " \
                                     "print(readme_table())'"


def test_every_format_the_loader_reads_is_one_the_configuration_accepts():
    """`--format catboost` was refused by the configuration while the loader read it: one list, read by both."""
    import typing

    from mlwarden.audit.config import AuditConfig, ModelConfig
    from mlwarden.io import FORMATS
    accepted = typing.get_args(ModelConfig.model_fields["format"].annotation)
    assert set(accepted) == set(FORMATS) and {"catboost", "hf", "xgboost", "export"} <= set(FORMATS)
    for fmt in FORMATS:
        assert AuditConfig.model_validate({"model": {"format": fmt}}).model.format == fmt
