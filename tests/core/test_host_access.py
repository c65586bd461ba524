"""Devices whose kernels reach host memory (pappus/host_access.py), as the engines treat them.

The GPU backends refuse such a device at open unless the operator allows it (tested with fake
drivers in tests/cuda and tests/hip). What the allowance can never cover is the serving process
itself: the sequential engine of an in-process backend refuses such a device whatever the
option, and the multiprocess engine, whose workers are separate processes, runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pappus.errors import DeviceError
from pappus.host_access import DETAIL, refuse_in_serving_process

from .hostile_device import hostile_runtime

A = np.arange(16 * 16, dtype=np.int64).reshape(16, 16)


def test_the_sequential_engine_never_drives_such_a_device_from_the_serving_process(tmp_path):
    rt = hostile_runtime(tmp_path, engine="hostile-sequential", pageable=True)
    try:
        with pytest.raises(DeviceError, match="drives it from the serving process itself") as info:
            rt.invoke("mm", {"A": A.tobytes()}, deadline=30)
        assert info.value.fields["status"] == "host_memory_reachable"
        assert "use the multiprocess engine" in str(info.value)
        with pytest.raises(DeviceError, match="serving process itself"):  # and again, not once only
            rt.invoke("mm", {"A": A.tobytes()}, deadline=30)
    finally:
        rt.close(drain=False, timeout=10)


def test_the_multiprocess_engine_runs_it_in_its_workers(tmp_path):
    rt = hostile_runtime(tmp_path, pageable=True)
    try:
        assert rt.invoke("mm", {"A": A.tobytes()}, deadline=30)["B"] == (A @ A.T + 2).tobytes()
        assert rt.engine("hostile-multiprocess").slots[0].details[DETAIL] is True
    finally:
        rt.close(drain=False, timeout=10)


def test_a_device_that_does_not_reach_host_memory_runs_in_the_serving_process(tmp_path):
    rt = hostile_runtime(tmp_path, engine="hostile-sequential")
    try:
        assert rt.invoke("mm", {"A": A.tobytes()}, deadline=30)["B"] == (A @ A.T + 2).tobytes()
    finally:
        rt.close(drain=False, timeout=10)


@pytest.mark.parametrize("details", [{}, {DETAIL: False}, {DETAIL: 0}, {"other": True}])
def test_only_a_device_that_says_so_is_refused(details):
    refuse_in_serving_process(details, device="gpu0", engine="x-sequential")
    with pytest.raises(DeviceError, match="gpu0"):
        refuse_in_serving_process({**details, DETAIL: True}, device="gpu0", engine="x-sequential")
