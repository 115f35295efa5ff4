"""Hostile and malformed input (issue 23, classes 4, 5 and 6): bounded configs, one JSON
document on every failure of a ``--json`` command, and no traceback from a bad argument."""

from __future__ import annotations

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
