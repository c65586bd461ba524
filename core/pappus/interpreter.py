"""The blueprint interpreter: one invocation on one device, written once for every backend.

Resolve sizes against the inputs, allocate buffers from the pool, copy inputs in, run the
control flow through the DeviceAPI, copy outputs out, and always release (zero) the pool, on
success, error, fault and timeout alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .errors import DeviceError, FieldError, InvalidInput
from .interfaces import DeviceAPI
from .plan import Plan, Resolution
from .pool import BufferPool

OutputSink = Callable[[str, int], Any]
log = logging.getLogger("pappus.interpreter")


def run_invocation(
    device: DeviceAPI,
    pool: BufferPool,
    plan: Plan,
    inputs: Mapping[str, Any],
    handles: Mapping[str, Any],
    *,
    resolution: Resolution | None = None,
    sink: OutputSink | None = None,
    release: bool = True,
) -> dict[str, Any]:
    """Run ``plan`` on ``inputs``; return each output as bytes, or as written into ``sink(name, size)``.

    ``inputs`` values are buffer-protocol objects (bytes, memoryview, numpy arrays). ``sink`` lets
    the caller choose where outputs land (a shared-memory context) so they are copied once.

    ``release=False`` leaves zeroing the pool to the caller after a *successful* run, so that
    it can hand the outputs over first and zero while nobody waits; the caller must release
    before the pool serves anything else (:meth:`pappus.engine.executor.Executor.release_pending`).
    A failed run is always released here.
    """
    res = resolution if resolution is not None else plan.resolve(inputs)
    names = [name for name, _ in plan.config.blueprint.buffers]
    try:
        outputs = _run(device, pool, plan, inputs, handles, res, names, sink)
    except BaseException:
        # Zero on the error path too; if the device is too broken to zero (a sticky fault), the
        # original error is the one worth reporting, and the executor resets or replaces it.
        try:
            pool.release()
        except Exception as exc:
            if device.healthy:  # an unhealthy device refusing is expected; it is reset or replaced next
                log.warning("pool release after a failed invocation failed too", exc_info=True)
            else:
                log.debug("pool release refused by the unhealthy device: %s", exc)
        raise
    if release:
        pool.release()
    return outputs


def _run(device: DeviceAPI, pool: BufferPool, plan: Plan, inputs: Mapping[str, Any], handles: Mapping[str, Any],
         res: Resolution, names: list[str], sink: OutputSink | None) -> dict[str, Any]:
    placed = pool.layout([(name, res.sizes[name]) for name in names])
    offsets = dict(zip(names, placed, strict=True))
    base = pool.base
    for name in plan.inputs:
        data = inputs[name]
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        # Sized in bytes, and never more than its buffer holds (Plan.resolve checked this for
        # the same inputs; this copy must not trust that it was given the same ones).
        if view.nbytes > res.sizes[name]:
            raise InvalidInput(FieldError(f"inputs.{name}", f"has {view.nbytes} bytes but its buffer holds "
                                          f"only {res.sizes[name]}"))
        if view.nbytes:
            device.write(pool.span(offsets[name], view.nbytes, name), view)
    device.run(plan.program(res, base, handles, offsets))
    outputs: dict[str, Any] = {}
    for name in plan.outputs:
        size = res.sizes[name]
        if sink is None:
            outputs[name] = device.read_bytes(pool.span(offsets[name], size, name), size)
        else:
            dst = sink(name, size)
            if memoryview(dst).nbytes != size:
                raise DeviceError(f"output {name!r} is {size} bytes but its destination holds "
                                  f"{memoryview(dst).nbytes}")
            if size:
                device.read(pool.span(offsets[name], size, name), dst)
            outputs[name] = dst
    return outputs
