"""torchrun's environment variables are checked before any use: a value torchrun never sets is one error line.

``WORLD_SIZE=two`` was a ValueError traceback, and ``RANK >= WORLD_SIZE`` waited forever for ranks that never
come; each is now ``error:`` + ``hint:``, exit 2, nothing written, for every command that shards its inputs.
"""

from __future__ import annotations

import pytest
from conftest import DEMO_CFG

from visctl import distributed
from visctl.errors import VisctlError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# (environment, the variable the message names); every one of them would otherwise crash or hang
BAD_ENVIRONMENTS = [
    ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two'"),
    ({"WORLD_SIZE": "2.0", "RANK": "0"}, "WORLD_SIZE='2.0'"),
    ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE=0"),
    ({"WORLD_SIZE": "-2", "RANK": "0"}, "WORLD_SIZE=-2"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK=-1"),
    ({"WORLD_SIZE": "2", "RANK": "one"}, "RANK='one'"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "1", "RANK": "1"}, "RANK=1"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "2"}, "LOCAL_RANK=2"),
    ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "3"}, "LOCAL_WORLD_SIZE=3"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "http"}, "MASTER_PORT='http'"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
]


@pytest.fixture
def clean_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("env", "named"), BAD_ENVIRONMENTS, ids=[str(e) for e, _ in BAD_ENVIRONMENTS])
def test_bad_torchrun_variable_is_one_error(clean_env, env, named):
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(VisctlError, match="torchrun environment") as info:
        distributed.env_ranks()
    assert named in info.value.message
    assert "torchrun" in (info.value.hint or "")
    assert not distributed.active()  # asked by code of a command that never joined: not an error there


@pytest.mark.parametrize(("env", "expected"), [
    ({}, (0, 1, 0)),
    ({"RANK": "3"}, (0, 1, 0)),  # RANK without WORLD_SIZE: not torchrun's, not read
    ({"WORLD_SIZE": "", "RANK": "garbage"}, (0, 1, 0)),  # empty is unset
    ({"WORLD_SIZE": "1"}, (0, 1, 0)),
    ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": "29500"}, (3, 4, 1)),
    ({"WORLD_SIZE": " 2 ", "RANK": "1"}, (1, 2, 0)),
])
def test_good_environments_read_as_torchrun_means_them(clean_env, env, expected):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert distributed.env_ranks() == expected


@pytest.mark.parametrize("command", ["cam", "featmap"])
@pytest.mark.parametrize(("env", "named"), [BAD_ENVIRONMENTS[0], BAD_ENVIRONMENTS[4], BAD_ENVIRONMENTS[8]],
                         ids=["world-two", "rank-past-world", "no-rank"])
def test_commands_stop_at_once_with_one_line(invoke, clean_env, image_file, tmp_path, command, env, named):
    """No hang (RANK >= WORLD_SIZE used to wait for the missing ranks) and no traceback; nothing written."""
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setenv("MASTER_PORT", "29533")
    for key, value in env.items():
        clean_env.setenv(key, value)
    out = tmp_path / "out"
    result = invoke(command, image_file, DEMO_CFG, "-o", out, "--quiet")
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and named in errors[0] and "hint: torchrun sets" in result.stderr
    assert "Traceback" not in result.output
    assert not (out / "manifest.json").exists()
