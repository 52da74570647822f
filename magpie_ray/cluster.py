"""The cluster's front door: which Ray a run joins, checked before anything starts.

`ray.init(address=...)` against an address that does not answer retries for many minutes while
Ray's C++ client prints its warnings; against a head of another version or a token-mode head
without a token it ends in a traceback. `check_address` asks the head's GCS for the cluster's
metadata over gRPC first (Ray's own messages, its own token header), within
`cluster.connect_timeout_s`, and turns each way that can fail into one `ClusterUnreachable`
line: the address, what was tried and found, and the fix. `connect` joins (or starts) Ray.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from .config import ClusterConfig, ConfigError

# Ray's environment variable for the address, set by `ray job submit` for its entrypoint.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
_FIX_ADDRESS = (
    "Fix: check that the head is up (`ray status --address HOST:PORT` on it) and that the"
    " port is its GCS port (6379 unless `ray start --head --port` set another); the dashboard's"
    " http://HOST:8265 is the address `ray job submit` takes, and under `ray job submit` the"
    " job finds its cluster without cluster.address"
)


class ClusterUnreachable(ConfigError):
    """The run cannot join the cluster it names: one line, the CLI exits 2."""


@dataclass(frozen=True)
class Target:
    """Where `ray.init` would connect: `address` as the user gave it, `source` the key or
    variable it came from."""

    address: str
    source: str


def target(cluster: ClusterConfig, environ: dict[str, str] | None = None) -> Target | None:
    """The cluster a run joins, the way `ray.init` picks it: `cluster.address`, else
    RAY_ADDRESS; None: a local Ray of the run's own."""
    environ = os.environ if environ is None else environ
    if cluster.address:
        return Target(cluster.address, "cluster.address")
    if environ.get(RAY_ADDRESS_ENV):
        return Target(environ[RAY_ADDRESS_ENV], RAY_ADDRESS_ENV)
    return None


def _auto_address(where: Target) -> str:
    """The GCS address `auto` finds on this machine (the last `ray start`, or a running GCS)."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as err:
        found = str(err).split(". ")[0]  # Ray's first sentence: none found, or several
        raise ClusterUnreachable(
            f"{where.source}=auto looks for a Ray started on this machine: {found}. Fix: start"
            " one with `ray start --head`, give the head's GCS address (HOST:6379), or leave"
            " cluster.address unset to start a local Ray for this run"
        ) from None


def _host_port(where: Target) -> tuple[str, int]:
    address = where.address.strip()
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterUnreachable(
            f"{where.source}={where.address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, the head's"
            " GCS address), `auto`, or ray://HOST:10001 (Ray Client)"
        )
    return host.strip("[]"), int(port)


def _wait_for_port(where: Target, host: str, port: int, timeout_s: float) -> float:
    """Retries a TCP connection until it opens (a head may still be starting); returns the
    seconds left, or raises naming the last error."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(left, 5.0))):
                return deadline - time.monotonic()
        except OSError as err:
            why = err.strerror or type(err).__name__
            if isinstance(err, socket.gaierror):
                why = f"the host name does not resolve ({why})"
            elif isinstance(err, TimeoutError | socket.timeout):
                why = "no answer"
        if time.monotonic() + 1 >= deadline:
            raise ClusterUnreachable(
                f"{where.source}={where.address}: no Ray cluster answered within"
                f" cluster.connect_timeout_s={timeout_s:g} s (tried TCP to {host}:{port}: {why})."
                f" {_FIX_ADDRESS}"
            )
        time.sleep(1.0)


def _cluster_metadata(where: Target, address: str, timeout_s: float) -> dict:
    """The cluster's metadata (Ray and Python versions) from its GCS, over gRPC with the
    token header Ray's own client would send."""
    import grpc
    from ray._private.authentication.grpc_authentication_client_interceptor import (
        SyncAuthenticationMetadataClientInterceptor,
    )
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = grpc.intercept_channel(
        grpc.insecure_channel(address), SyncAuthenticationMetadataClientInterceptor()
    )
    try:
        stub = gcs_service_pb2_grpc.InternalKVGcsServiceStub(channel)
        request = gcs_service_pb2.InternalKVGetRequest(
            key=b"CLUSTER_METADATA", namespace=b"cluster"
        )
        reply = stub.InternalKVGet(request, timeout=max(1.0, timeout_s), wait_for_ready=True)
    except grpc.RpcError as err:
        raise _rpc_failure(where, err, timeout_s) from None
    finally:
        channel.close()
    try:
        return json.loads(reply.value)
    except ValueError:
        raise ClusterUnreachable(
            f"{where.source}={where.address} is a Ray GCS, but it holds no cluster metadata"
            " (a head still starting?). Fix: retry once `ray status` on the head answers"
        ) from None


def _rpc_failure(where: Target, err, timeout_s: float) -> ClusterUnreachable:
    import grpc

    code, details = err.code(), (err.details() or "").strip()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ClusterUnreachable(
            f"{where.source}={where.address}: the cluster runs with token authentication and"
            f" refused this client ({details.rstrip('.')}). Fix: set RAY_AUTH_MODE=token and"
            " RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token in the environment"
            " that runs magpie_ray"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        found = f"the port accepts connections but sent no Ray GCS reply in {timeout_s:.0f} s"
    else:
        found = f"the port answers, but not as a Ray GCS ({code.name}: {details})"
    return ClusterUnreachable(f"{where.source}={where.address}: {found}. {_FIX_ADDRESS}")


def _versions_match(where: Target, metadata: dict) -> None:
    """Ray's own version check (Ray and Python of the head against this process), its words
    on one line."""
    from ray._private.utils import check_version_info

    try:
        check_version_info(metadata, "this machine")
    except RuntimeError as err:
        words = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ClusterUnreachable(
            f"{where.source}={where.address}: {words}. Fix: run magpie_ray with the cluster's"
            " Ray and Python (its image), or submit the job with `ray job submit`"
        ) from None


def check_address(where: Target, timeout_s: float) -> None:
    """Raises `ClusterUnreachable` unless the cluster at `where` answers as a Ray GCS within
    `timeout_s`, accepts this client's token, and runs this process's Ray and Python."""
    address = where.address.strip()
    if address.startswith(("http://", "https://")):
        raise ClusterUnreachable(
            f"{where.source}={address} is a dashboard URL, the address `ray job submit"
            " --address` takes. Fix: give the head's GCS address (HOST:6379) to join the"
            " cluster from here, or submit the job with `ray job submit`, which needs no"
            " cluster.address"
        )
    if address == "local":
        return
    if address == "auto":
        where = Target(_auto_address(where), f"{where.source}=auto, found")
        address = where.address
    ray_client = address.startswith("ray://")
    host, port = _host_port(Target(address.removeprefix("ray://"), where.source))
    left = _wait_for_port(where, host, port, timeout_s)
    if ray_client:  # Ray Client's server checks versions itself when ray.init connects
        return
    _versions_match(where, _cluster_metadata(where, address, left))


def connect(cluster: ClusterConfig) -> None:
    """Join the cluster named by cluster.address (or RAY_ADDRESS) once `check_address` passed,
    else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    where = target(cluster)
    if where is not None:
        check_address(where, cluster.connect_timeout_s)
    ray.init(address=cluster.address, num_cpus=cluster.num_cpus)
