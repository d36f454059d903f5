"""Stale torchrun variables (WORLD_SIZE=2, RANK=0, no other rank) no longer wait silently for hours.

A sharded command says which rank it is, of how many, and where it waits, before the rendezvous; the wait is
bounded by ``VISCTL_RENDEZVOUS_TIMEOUT`` seconds and ends in one ``error:`` + ``hint:`` line, exit 2.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO_CFG

from visctl import distributed
from visctl.errors import VisctlError

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("rank", [0, 1])
def test_missing_ranks_end_in_one_error(tmp_path, image_file, rank):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               VISCTL_RENDEZVOUS_TIMEOUT="3", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([sys.executable, "-m", "visctl", "cam", str(image_file), str(DEMO_CFG),
                               "-o", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail("the rendezvous wait is not bounded by VISCTL_RENDEZVOUS_TIMEOUT")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert f"rank {rank} of 2" in err and f"127.0.0.1:{env['MASTER_PORT']}" in err
    assert err.index("waits at") < err.index("error:")  # said before the wait, not only at its end
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line and "[c10d]" not in line]
    assert len(errors) == 1 and "never joined" in errors[0], err
    hint = err[err.index("hint:"):]
    assert "torchrun" in hint and "unset WORLD_SIZE" in hint
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_bad_rendezvous_timeout_is_one_error(monkeypatch, value):
    monkeypatch.setenv(distributed.RENDEZVOUS_ENV, value)
    with pytest.raises(VisctlError, match=distributed.RENDEZVOUS_ENV) as info:
        distributed.rendezvous_timeout()
    assert "seconds" in (info.value.hint or "")


def test_rendezvous_timeout_default_and_value(monkeypatch):
    monkeypatch.delenv(distributed.RENDEZVOUS_ENV, raising=False)
    assert distributed.rendezvous_timeout() == distributed.RENDEZVOUS_TIMEOUT
    assert 60 <= distributed.RENDEZVOUS_TIMEOUT.total_seconds() <= 900
    monkeypatch.setenv(distributed.RENDEZVOUS_ENV, "2.5")
    assert distributed.rendezvous_timeout().total_seconds() == 2.5
