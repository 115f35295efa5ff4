"""Hostile and malformed input (issue 23, classes 4, 5 and 6): bounded configs, one JSON
document on every failure of a ``--json`` command, and no traceback from a bad argument."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from tests.test_cli import EXE, env  # noqa: F401 - env is a fixture
from transferbench.cli import main
from transferbench.config import MAX_CONFIG_VALUES, check_size, non_finite_values

# --------------------------------------------------------------------------- 4. bounded configs


def _laughs(levels: int = 9, width: int = 9) -> str:
    """A flow-style YAML value whose anchors repeat each other: width**levels strings."""
    parts = ["&a0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


def _laughs_config(tmp_path: Path) -> Path:
    """A valid config with a billion laughs under one key (about 1 KB)."""
    raw = yaml.safe_dump(tiny_config())
    path = tmp_path / "laughs.yaml"
    path.write_text(raw + f"laughs: {_laughs()}\nperformance: {{cache_frozen: *a9}}\n")
    assert path.stat().st_size < 2000
    return path


def _bounded(env, *args, seconds: float = 60, max_rss_mb: int = 1500) -> subprocess.CompletedProcess:  # noqa: F811
    """Run the command in a process that must end within ``seconds`` and never hold more
    than ``max_rss_mb`` of memory (killed otherwise, failing the test)."""
    proc = subprocess.Popen([EXE, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak, deadline = 0, time.monotonic() + seconds
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) // 1024)
        except (OSError, StopIteration, ValueError):
            pass
        if time.monotonic() > deadline or peak > max_rss_mb:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{args[0]} ran {seconds}s or held {peak} MB: the config's work is not bounded")
        time.sleep(0.05)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "plan", "run", "--set"])
def test_a_billion_laughs_is_refused_within_a_time_and_memory_limit(env, tmp_path, command):  # noqa: F811
    if command == "--set":
        cfg = tmp_path / "ok.yaml"
        cfg.write_text(yaml.safe_dump(tiny_config()))
        proc = _bounded(env, "plan", cfg, "--set", f"data.extra={_laughs()}")
        where = "--set data.extra"
    else:
        cfg = _laughs_config(tmp_path)
        proc = _bounded(env, command, cfg, *(["--out", tmp_path / "run"] if command == "run" else []))
        where = "laughs: expands to"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert where in proc.stderr and "billion laughs" in proc.stderr and f"{MAX_CONFIG_VALUES:,}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_size_check_visits_each_shared_node_once():
    """In this process: the check and the non-finite scan of 9**12 values take no time."""
    from transferbench.config import load_yaml
    from transferbench.errors import ConfigError

    raw = {"x": load_yaml(_laughs(levels=12))}
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to"):
        check_size(raw)
    assert non_finite_values(raw) == []
    assert time.perf_counter() - t0 < 5  # a walk of every path would take hours
    shared = load_yaml("a: &n [1, .inf]\nb: *n\nc: [*n, *n]")
    assert non_finite_values(shared) == [("a.1", "inf is not a finite number")]  # named once, where first seen
    check_size(shared)  # small: fine


def test_the_documented_bound_is_the_code_s():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "run-directory.md").read_text()
    assert f"at most {MAX_CONFIG_VALUES:,} values" in doc


@pytest.mark.parametrize("text", ["a: &x [1, *x]", "a: &x {b: *x}"])
def test_an_alias_inside_its_own_anchor_is_refused(fake_plugins, tmp_path, capsys, text):
    cfg = tmp_path / "cycle.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()) + text.replace("a:", "cyclic:") + "\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cyclic" in err and "Traceback" not in err
    assert "refers to a node that contains it" in err or "unconstructable recursive node" in err


def test_a_config_nested_thousands_deep_is_a_message(fake_plugins, tmp_path, capsys):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()) + "deep: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and "Traceback" not in err


# --------------------------------------------------------------------------- 5. --json on failure


def _documented_error_keys() -> set[str]:
    from tests.test_json_output import _documented_keys

    return _documented_keys("error")


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's errors
        return int(exc.code)


def _error_document(capsys, argv: list[str]) -> tuple[int, dict]:
    """Run ``argv`` with and without --json: the same exit code, and with it one error document."""
    plain = _exit_code([a for a in argv if a != "--json"])
    plain_out = capsys.readouterr().out
    code = _exit_code(argv)
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # the whole of stdout is one document
    assert code == plain != 0 and doc["exit_code"] == code, (code, plain, captured.err)
    assert doc["format"] == "transferbench.error/1" and set(doc) == _documented_error_keys()
    assert doc["message"] and "Traceback" not in captured.err
    assert not plain_out.lstrip().startswith("{")
    return code, doc


@pytest.fixture
def finished(fake_plugins, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    return cfg, tmp_path / "run"


@pytest.mark.parametrize("argv, command, error, says", [
    (["layers", "mlp", "--classes", "-1"], "layers", "UsageError", "--classes"),
    (["layers"], "layers", "UsageError", "required: architecture"),
    (["layers", "mlp", "--input-shape=-1,32"], "layers", "ConfigError", "at least 1"),
    (["layers", "mlp", "--input-shape=3,x"], "layers", "ConfigError", "expected integers"),
    (["layers", "nonet"], "layers", "ConfigError", "nonet"),
    (["plugins", "cafenet"], "plugins", "PluginError", "cafenet"),
    (["plugins", "--verbose", "--bogus"], "plugins", "UsageError", "--bogus"),
    (["plan", "{cfg}", "--tflops", "0"], "plan", "UsageError", "--tflops"),
    (["plan", "{cfg}", "--estimate-only"], "plan", "ConfigError", "--estimate-only needs `estimators:`"),
    (["plan", "{tmp}/nowhere.yaml"], "plan", "ConfigError", "not found"),
    (["report", "{tmp}/nowhere"], "report", "RunDirError", "nowhere"),
    (["report", "{run}", "--no-plots", "--metric", "top9"], "report", "UsageError", "--metric"),
    (["report", "{run}", "--plots-dir", "{tmp}/file/plots"], "report", "NotADirectoryError", "file/plots"),
])
def test_every_failure_of_a_json_command_is_one_error_document(finished, tmp_path, capsys, argv, command, error,
                                                                 says):
    cfg, run = finished
    (tmp_path / "file").write_text("a file, not a folder")
    argv = [a.format(cfg=cfg, run=run, tmp=tmp_path) for a in argv] + ["--json"]
    code, doc = _error_document(capsys, argv)
    assert code == 2 and doc["command"] == command and doc["error"] == error, doc
    assert says in doc["message"], doc


def test_an_interruption_and_a_bug_under_json_are_documents_too(monkeypatch, capsys):
    from transferbench import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_plugins", interrupted)
    assert main(["plugins", "--json"]) == 130
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 130 and doc["error"] == "KeyboardInterrupt"

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_plugins", broken)
    with pytest.raises(RuntimeError):  # the traceback a bug deserves: exit code 1 ...
        main(["plugins", "--json"])
    doc = json.loads(capsys.readouterr().out)  # ... after the document
    assert doc["exit_code"] == 1 and doc["error"] == "RuntimeError" and doc["message"] == "a bug"


def test_plan_estimate_only_json_is_the_plan_of_run_estimate_only(tiny_config_file, capsys):
    exp = {**tiny_config()["experiments"][0], "estimators": ["knn"], "layers": [1, 2]}
    path = tiny_config_file(experiments=[exp])
    assert main(["plan", str(path), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main(["plan", str(path), "--estimate-only", "--json"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert {j["kind"] for j in only["jobs"]} == {"base", "estimate"}
    assert "transfer" in {j["kind"] for j in whole["jobs"]}


# --------------------------------------------------------------------------- 6. malformed arguments


@pytest.mark.parametrize("argv, says", [
    (["layers", "mlp", "--input-shape=-1,32"], "--input-shape: every dimension must be at least 1"),
    (["layers", "mlp", "--input-shape=0"], "--input-shape: every dimension must be at least 1"),
    (["layers", "caffenet_scaled", "--input-shape=3,2,2"], "--input-shape: input 2x2 is too small"),
    (["layers", "caffenet_scaled", "--input-shape=3,32"], "--input-shape: CaffeNet needs (channels, height, width)"),
    (["export", "{tmp}", "--out", "{tmp}/x", "--n", "-1"], "argument --n: must be at least 0"),
    (["export", "{tmp}", "--out", "{tmp}/x", "--seed", "zero"], "argument --seed: invalid int value"),
    (["plan", "{tmp}/c.yaml", "--decode-rate", "inf"], "argument --decode-rate: must be a finite number"),
])
def test_malformed_numbers_on_the_command_line_are_messages(fake_plugins, tmp_path, capsys, argv, says):
    code = _exit_code([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err, err


def test_an_architecture_that_breaks_on_a_shape_is_a_message_at_the_argument(fake_plugins, monkeypatch, capsys):
    from transferbench import network

    def breaks(arch, num_classes, shape):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x96 and 12x16)")

    monkeypatch.setattr(network, "build_meta", breaks)
    assert _exit_code(["layers", "mlp", "--input-shape=3,32"]) == 2
    err = capsys.readouterr().err
    assert "--input-shape: mlp cannot be built for inputs of shape (3, 32)" in err and "RuntimeError: mat1" in err
    assert "Traceback" not in err
