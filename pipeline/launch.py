"""One or N processes on one or N machines: a stage re-runs itself under torchrun when
``dist`` asks for more.

Every node runs the same stage command with the same ``params.yaml``; the node whose
address is ``dist.rdzv_endpoint``'s host (the one DVC runs on) hosts the rendezvous and
holds rank 0, the only rank that writes outputs, checkpoints and the MLflow run. Node
networking is worked out here rather than left to torchrun's guesses from the hostname
(docs/distributed.md#many-machines): which node hosts the rendezvous, the address each
node is reached at, and the interface gloo talks on.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from pcdarts.distributed import init_from_env, is_distributed, max_divergence, rank, world_size
from pcdarts.errors import UserError
from pcdarts.runtime import resolve_device
from pipeline.config import REPO_ROOT, DistParams, Params, ParamsError
from pipeline.io import to_jsonable
from pipeline.stage import RESUME_HINT
from pipeline.tracking import check_tracking_server, flatten_params, resolve_tracking_uri

# Set by the launcher for its workers: "1" on the node that hosts the rendezvous (node 0).
HOSTS_RENDEZVOUS_ENV = "PCDARTS_HOSTS_RENDEZVOUS"
NODE_ADDRESS_ENV = "PCDARTS_NODE_ADDRESS"  # and this node's address, for messages
GLOO_INTERFACE_ENV = "GLOO_SOCKET_IFNAME"  # gloo's own variable; a value set by the user wins


class RendezvousFailedError(UserError, RuntimeError):
    """The nodes could not meet at ``dist.rdzv_endpoint``; names it and the timeout."""


class ProcessKilledError(UserError, RuntimeError):
    """A process of this node was killed (by a signal) mid-stage."""


@dataclass(frozen=True)
class NodeAddress:
    """How this machine reaches the rendezvous host."""

    address: str  # this machine's address on the route to the rendezvous host
    interface: str  # the network interface holding ``address`` (gloo talks on it)
    hosts_rendezvous: bool  # the rendezvous host's address is this machine's: node 0


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); RendezvousFailedError naming the key otherwise."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise RendezvousFailedError(
            f"dist.rdzv_endpoint = {endpoint!r}: expected host:port (node 0's address and a"
            " free port, e.g. 10.0.0.1:29500); set it with -S dist.rdzv_endpoint=..."
        )
    return host, int(port)


def node_address(endpoint: str) -> NodeAddress:
    """This machine's address and interface towards ``endpoint``'s host, and whether it is
    that host: the source address the kernel picks for the host is the host's own address
    exactly when the address is this machine's. No packet is sent (UDP connect)."""
    host, port = split_endpoint(endpoint)
    try:
        target = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((target, port))
            local = str(probe.getsockname()[0])
    except OSError as error:  # gaierror: no such host; "Network is unreachable": no route
        raise RendezvousFailedError(
            f"dist.rdzv_endpoint = {endpoint!r}: this machine cannot reach {host!r}"
            f" ({error.strerror or error}); set it to node 0's address as every node reaches it"
        ) from None
    return NodeAddress(local, _interface_of(local), hosts_rendezvous=local == target)


def _interface_of(address: str) -> str:
    import psutil  # noqa: PLC0415 - only a multi-node launch needs it

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addresses):
            return name
    return ""


def start_processes(p: Params, module: str, argv: list[str]) -> torch.device:
    """This stage's device, after starting its processes.

    With ``dist.nproc_per_node`` or ``dist.nnodes`` above 1 and not yet under torchrun, runs
    torchrun on this same stage and exits with its status (so `dvc repro` launches it);
    under torchrun, joins the process group with the rendezvous host's ranks first and
    checks that every node read the same params.yaml (ParamsError naming the first key that
    differs). First checks that the tracking store answers (TrackingUnavailableError
    otherwise), so a dead server costs no compute. Per-process batch = global batch / world
    size (:func:`per_process_batch`).
    """
    under_torchrun = "LOCAL_RANK" in os.environ
    if not under_torchrun:  # before any data or compute; torchrun's children skip it
        check_tracking_server(resolve_tracking_uri(REPO_ROOT, p.tracking.tracking_uri))
    d = p.dist
    if (d.nproc_per_node > 1 or d.nnodes > 1) and not under_torchrun:
        sys.exit(run_torchrun(d, module, argv))
    device = init_from_env(p.device)
    if is_distributed():
        _rendezvous_host_first(d)
        check_same_params(p, " ".join([module, *argv]))
    device = device if device is not None else resolve_device(p.device)
    configure_runtime(device)
    return device


def torchrun_arguments(d: DistParams, node: NodeAddress | None) -> list[str]:
    """torchrun's options for ``d`` (``node``: this machine's address, for several nodes)."""
    args = [
        f"--nproc_per_node={d.nproc_per_node}",
        f"--nnodes={d.nnodes}",
        f"--max_restarts={d.max_restarts}",
    ]
    if node is None:
        return [*args, "--standalone"]
    conf = {
        "is_host": int(node.hosts_rendezvous),  # not guessed from the hostname
        "join_timeout": d.rdzv_timeout_s,
        "read_timeout": d.rdzv_connect_timeout_s,
    }
    return [
        *args,
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={d.rdzv_endpoint}",
        f"--rdzv_id={d.rdzv_id}",
        f"--local_addr={node.address}",  # where the others reach this node's rank 0
        "--rdzv_conf=" + ",".join(f"{k}={v}" for k, v in conf.items()),
    ]


def run_torchrun(d: DistParams, module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` under torchrun (in this process); its exit status.

    Workers that fail print their own one line; this adds nothing to it (torchrun's
    failure report and traceback are not shown). A rendezvous that fails raises
    RendezvousFailedError naming ``dist.rdzv_endpoint`` and the timeout that ran out.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import get_args_parser, run

    node = node_address(d.rdzv_endpoint) if d.nnodes > 1 else None
    if node is not None and not node.hosts_rendezvous:
        wait_for_rendezvous(d)
    os.environ[HOSTS_RENDEZVOUS_ENV] = str(int(node is None or node.hosts_rendezvous))
    os.environ[NODE_ADDRESS_ENV] = node.address if node is not None else socket.gethostname()
    if node is not None and node.interface:
        os.environ.setdefault(GLOO_INTERFACE_ENV, node.interface)
    args = get_args_parser().parse_args([*torchrun_arguments(d, node), "-m", module, *argv])
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as error:
        _, failure = error.get_first_failure()
        if failure.exitcode < 0:  # killed by a signal: it could not say so itself
            raise ProcessKilledError(
                f"this node's process of local rank {failure.local_rank} (pid {failure.pid})"
                f" was killed by {failure.signal_name()}. {RESUME_HINT}"
            ) from None
        return failure.exitcode
    except RendezvousError as error:
        raise RendezvousFailedError(_rendezvous_problem(d, error)) from None
    return 0


# Seconds between two tries to reach node 0 while it may still be starting.
CONNECT_RETRY_S = 1.0


def wait_for_rendezvous(d: DistParams) -> None:
    """Return once node 0's rendezvous port accepts a connection; RendezvousFailedError
    naming ``dist.rdzv_endpoint`` after ``dist.rdzv_connect_timeout_s`` (a wrong address or
    port, or node 0 not started). Plain sockets: one line, not c10d's retry log."""
    host, port = split_endpoint(d.rdzv_endpoint)
    deadline = time.monotonic() + d.rdzv_connect_timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(left, CONNECT_RETRY_S)):
                return
        except OSError as error:
            if time.monotonic() + CONNECT_RETRY_S >= deadline:
                reason = error.strerror or str(error) or type(error).__name__
                raise RendezvousFailedError(
                    f"dist.rdzv_endpoint = {d.rdzv_endpoint!r}: nothing answers there within"
                    f" dist.rdzv_connect_timeout_s = {d.rdzv_connect_timeout_s} s ({reason});"
                    " start the stage on node 0 (the machine at that address) first, and give"
                    " every node node 0's address and the same free port"
                ) from None
        time.sleep(CONNECT_RETRY_S)


def _rendezvous_problem(d: DistParams, error: Exception) -> str:
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError

    cause = error.__cause__ or error
    reason = (str(cause) or type(cause).__name__).splitlines()[0]
    if isinstance(error, RendezvousTimeoutError):
        waited = f"not all {d.nnodes} nodes joined within dist.rdzv_timeout_s ="
        waited += f" {d.rdzv_timeout_s} s"
    else:
        waited = f"no answer within dist.rdzv_connect_timeout_s = {d.rdzv_connect_timeout_s} s"
    return (
        f"dist.rdzv_endpoint = {d.rdzv_endpoint!r}: the rendezvous failed, {waited} ({reason});"
        " start the stage on node 0 (the machine at that address) and then on every other"
        " node, with the same params.yaml; dist.rdzv_endpoint must be node 0's address and a"
        " port free there"
    )


def _rendezvous_host_first(d: DistParams) -> None:
    """Renumber the ranks so that the node hosting the rendezvous (node 0, the one DVC runs
    on) holds rank 0: torchrun orders nodes by address and process id, which need not put
    it first. One process group stays: re-made under the new ranks when they change."""
    me = {
        "first": os.environ.get(HOSTS_RENDEZVOUS_ENV) == "1",
        "node": int(os.environ.get("GROUP_RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
    }
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, me)
    order = sorted(range(len(everyone)), key=lambda r: _order_key(everyone[r]))
    if order == list(range(len(everyone))):
        return
    new_rank = order.index(rank())
    token: list[Any] = [uuid.uuid4().hex]
    dist.broadcast_object_list(token, src=0)  # a fresh key space for the new group's store
    backend = dist.get_backend()
    dist.destroy_process_group()
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=d.rdzv_timeout_s),
    )
    prefixed = dist.PrefixStore(f"pcdarts/rank_order/{token[0]}", store)
    dist.init_process_group(backend, store=prefixed, rank=new_rank, world_size=len(everyone))
    os.environ["RANK"] = str(new_rank)  # for what reads torchrun's variables (MMEngine)


def _order_key(info: dict[str, Any]) -> tuple[bool, int, int]:
    return (not info["first"], info["node"], info["local_rank"])


def check_same_params(p: Params, stage: str) -> None:
    """ParamsError, on every rank, when any rank runs another stage than rank 0 (``stage``:
    its command, as ``stages.search cifar10 0``) or read another params.yaml: names both
    commands, or the first differing key (in params.yaml's order) and both values."""
    mine = {
        "stage": stage,
        "params": flatten_params(to_jsonable(p)),
        "where": os.environ.get(NODE_ADDRESS_ENV, socket.gethostname()),
    }
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    first = everyone[0]
    for other_rank, theirs in enumerate(everyone):
        if theirs["stage"] != first["stage"]:
            raise ParamsError(
                f"the nodes run different stages: python -m {first['stage']} on rank 0 (at"
                f" {first['where']}), python -m {theirs['stage']} on rank {other_rank} (at"
                f" {theirs['where']}); start the same stage on every node (on node 0, `dvc"
                " repro -s <stage>` runs that stage alone, without the stages upstream of it)"
            )
    reference = first["params"]
    for other_rank, theirs in enumerate(everyone):
        given = theirs["params"]
        keys = [*reference, *(k for k in given if k not in reference)]
        differing = next((k for k in keys if reference.get(k) != given.get(k)), None)
        if differing is None:
            continue
        raise ParamsError(
            f"params.yaml differs between the nodes at {differing}: {reference.get(differing)}"
            f" on rank 0 (at {first['where']}), {given.get(differing)} on rank {other_rank}"
            f" (at {theirs['where']}); compose it on every node with the same overrides"
            " (python -m stages.compose ...) and start the stage again on every node"
        )


def per_process_batch(global_batch: int, key: str) -> int:
    world = world_size()
    if global_batch % world:
        raise ValueError(f"{key}={global_batch} is not divisible by the {world} processes")
    return global_batch // world


def finish_processes(model: torch.nn.Module | None = None) -> None:
    """Leave the process group. With ``model``, first check on the wire that every rank
    ends with rank 0's parameters (RuntimeError naming the largest difference otherwise)
    and say so on rank 0: only rank 0 writes the result, so a rank that drifted would be
    invisible in the outputs."""
    if not is_distributed():
        return
    if model is not None:
        # NCCL reduces CUDA tensors only, and the stage may have moved its model to the CPU
        on = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
        gap = max_divergence([p.detach().to(on) for p in model.parameters()])
        if gap != 0.0:
            raise RuntimeError(
                f"the {world_size()} processes end with different weights (largest difference"
                f" {gap:g}); the result written by rank 0 is not what the other ranks hold"
            )
        if rank() == 0:
            print(f"all {world_size()} processes end with identical weights")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


# On the CPU the thread count is part of the result: kernels split their sums by thread, so
# one tiny search step gives three different sets of weights on 1, 2 and 3 threads (measured
# 2026-12-02). Every CPU run therefore uses this many threads, on any machine. One: every
# machine has it, and on a shared 2-core machine it was 6-8x faster than two (OpenMP
# spin-waits), which tiny tensors cannot win back.
CPU_THREADS = 1


def configure_runtime(device: torch.device) -> None:
    """Threads and deterministic algorithms for a stage on ``device``.

    CPU: :data:`CPU_THREADS` threads, and ``torch.use_deterministic_algorithms(True)``
    (strict: an op without a deterministic CPU kernel raises rather than varies). CUDA: the
    cores this process may run on (DVC may start stages under a CPU mask), shared among the
    processes torchrun started on this machine; its kernels' algorithms are left as they are.
    """
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
        torch.use_deterministic_algorithms(True)
        return
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, cores // local))
