"""The per-document detectors of a scan (scan.py) as Ray tasks: `executor: ray` on
`data.assess` and `data.clean`, for corpora too big for one machine's cores.

The same function (`scan._inspect_batch`) runs on the same batches as with the local
process pool, at most a few batches per CPU in flight (memory stays flat: the corpus
streams through, it is never collected), and results are taken back in document order,
so the artifacts are byte-identical to the local executor's. A scan's duplicate
detection runs its MinHash in the same tasks and its shuffle in Ray Data (ray_scan.py,
ray_dedup.py); only the order-dependent decisions stay in the driver.

Where: a running cluster (`ray_address`: `host:port` of its head, `ray://host:10001`,
or `auto`; default `RAY_ADDRESS`), or without one a local Ray started for the run with
`workers` CPUs. Every Ray worker needs forgeml installed (the detectors are its code).
Offline: Ray's usage statistics are off, and a Ray started here listens on loopback and
asks no cloud metadata address (`LOCAL_RAY_ENVIRONMENT`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from forgeml.core.errors import ForgeError, InputError

log = logging.getLogger("forgeml.data")
RAY_ADDRESS_ENV = "RAY_ADDRESS"
OPTIONS = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
CONNECT_SECONDS = 5.0  # a cluster head that does not answer in this long is an error
GRPC_SECONDS = 15.0  # nor one whose port does not speak gRPC in this long
Item = TypeVar("Item")


def use_token_if_given() -> None:
    """A cluster with token authentication (on by default in Ray 2.60) wants the token
    from its client: given as RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token,
    it is used (Ray itself only looks for one when told RAY_AUTH_MODE=token)."""
    given = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if "RAY_AUTH_MODE" not in os.environ and (
        given or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _on_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0]
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _reachable(address: str) -> None:
    """A clear error now, instead of Ray retrying a dead address for a minute."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"ray_address {address!r} is not host:port, ray://host:port or auto",
            field="ray_address",
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ForgeError(
            f"the Ray cluster at {address} does not answer: {exc}",
            hint="check the head node's address and port (`ray status` on it); "
            "nothing was read yet",
        ) from exc
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        _speaks_grpc(address, f"{host}:{port}")


def _speaks_grpc(address: str, target: str) -> None:
    """A head's GCS (and Ray Client's server) speak gRPC. Something else on the port (a web
    server, another service) would have `ray.init` retry for about 14 minutes; an HTTP/2
    handshake that does not complete in GRPC_SECONDS says so instead."""
    if not grpc_ready(target, GRPC_SECONDS):
        raise ForgeError(
            f"something answers at {address} but it is not a Ray cluster "
            f"(no gRPC handshake in {GRPC_SECONDS:g} s)",
            hint="give the head node's GCS port (6379 unless `ray start --port` said "
            "otherwise) or ray://HEAD:10001; nothing was read yet",
        )


def grpc_ready(target: str, seconds: float) -> bool:
    """Whether `target` (host:port) completes a gRPC handshake within `seconds`. Only the
    transport is tried: no request is made, no token is needed. True where grpc (Ray's
    own dependency) is not installed: without Ray, ray_session says so itself."""
    try:
        import grpc
    except ImportError:
        return True

    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=seconds)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


# What the processes of a local Ray (started by `ray.init`, inheriting this environment)
# see. Ray's node address is loopback, not the machine's outward address (Ray treats a
# non-cluster node so), and its dashboard's cloud detection, which asks the cloud
# metadata addresses (169.254.169.254, metadata.google.internal) even with usage stats
# off, goes to a closed loopback port as its proxy and fails there: nothing leaves.
LOCAL_RAY_ENVIRONMENT = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


@contextmanager
def _offline_local_ray() -> Iterator[None]:
    """LOCAL_RAY_ENVIRONMENT while Ray starts its processes; this process's own after."""
    saved = {name: os.environ.get(name) for name in LOCAL_RAY_ENVIRONMENT}
    os.environ.update(LOCAL_RAY_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            elif name != "RAY_USAGE_STATS_ENABLED":
                os.environ[name] = value


@contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[Any]:
    """Ray, connected to `address` (or RAY_ADDRESS), or a local Ray with `cpus` CPUs."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing phones home
    address = address or os.environ.get(RAY_ADDRESS_ENV)
    if address:
        _reachable(address)
        use_token_if_given()
    # Ray reads some of LOCAL_RAY_ENVIRONMENT when it is imported, the rest as it starts.
    # A cluster on this machine's loopback (ours, or one `ray start` made so) needs this
    # process on loopback too: Ray expects a driver's address among its nodes'.
    with _offline_local_ray() if not address or _on_loopback(address) else contextlib.nullcontext():
        try:
            import ray
        except ImportError as exc:
            raise InputError(
                "executor ray needs Ray installed (forgeml's `ray` extra)", field="executor"
            ) from exc
        ours = not ray.is_initialized()  # else the caller's own (a Ray job running forgeml)
        try:
            if ours and address:
                ray.init(address=address, **OPTIONS)
            elif ours:
                ray.init(address="local", num_cpus=cpus, **OPTIONS)  # never one found here
        except Exception as exc:  # Ray raises bare Exception for a node that did not start
            raise ForgeError(
                f"Ray did not start for this run ({address or 'a local Ray'}): {exc}"[:2000]
            ) from exc
    try:
        yield ray
    finally:
        if ours:
            ray.shutdown()


def ordered_map(
    function: Callable[[Any], Any],
    items: Iterator[tuple[Item, Any]],
    *,
    cpus: int,
    address: str | None,
) -> Iterator[tuple[Item, Any]]:
    """(item, function(argument)) for each (item, argument), computed as Ray tasks with at
    most 2 per CPU in flight, in the order given."""
    with ray_session(address, cpus) as ray:
        yield from ordered_map_in(ray, function, items, cpus=cpus)


def cluster_cpus(ray: Any, cpus: int) -> int:
    """The CPUs of the cluster Ray is connected to (`cpus` if it does not say)."""
    return max(1, int(ray.cluster_resources().get("CPU", cpus)))


def ordered_map_in(
    ray: Any,
    function: Callable[..., Any],
    items: Iterator[tuple[Item, Any]],
    *,
    cpus: int,
    fetch: bool = True,
) -> Iterator[tuple[Item, Any]]:
    """`ordered_map` in a Ray session the caller holds. With `fetch` False each result is
    its object reference, left in Ray's object store (a tuple argument is spread over
    the function's parameters)."""
    remote = ray.remote(function)
    cpus = cluster_cpus(ray, cpus)
    window, tasks = 2 * cpus, 0
    pending: deque = deque()

    def take() -> tuple[Item, Any]:
        done, ref = pending.popleft()
        if fetch:
            return done, ray.get(ref)
        ray.wait([ref], fetch_local=False)  # bounded: at most `window` running
        return done, ref

    for item, argument in items:
        arguments = argument if not fetch and isinstance(argument, tuple) else (argument,)
        pending.append((item, remote.remote(*arguments)))
        tasks += 1
        if len(pending) >= window:
            yield take()
    while pending:
        yield take()
    log.info("%d Ray tasks ran %s on %d CPUs", tasks, function.__name__, cpus)
