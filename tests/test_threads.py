"""OpenMP wait policy of processes that share their CPUs (gameserver/threads.py)."""

from __future__ import annotations

import os

from gameserver.threads import POLICY_VARIABLE, wait_passively


def test_threads_sleep_between_kernels_by_default(monkeypatch):
    monkeypatch.delenv(POLICY_VARIABLE, raising=False)
    assert wait_passively() == "PASSIVE"
    assert os.environ[POLICY_VARIABLE] == "PASSIVE"


def test_a_policy_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(POLICY_VARIABLE, "ACTIVE")
    assert wait_passively() == "ACTIVE"
