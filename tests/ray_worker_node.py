"""Joins one worker node, on 127.0.0.1, to a running Ray head; runs until SIGTERM. Used by the cluster tests.

Why not `ray start --address`: in ray 2.60 that command refuses to join a worker unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, and with it set, it rewrites 127.0.0.1 (for both the head's address
and --node-ip-address) to the machine's routable interface. The node class below is the one
`ray.cluster_utils.Cluster.add_node` uses, given the loopback address directly.
A node given another loopback address (127.0.0.2) looks, to Ray and to the driver, like another machine.
Usage: python tests/ray_worker_node.py HEAD_GCS_ADDRESS NUM_CPUS [NODE_IP]
"""

import signal
import sys
import threading

import ray._private.node
import ray._private.parameter


def main(gcs_address: str, num_cpus: int, node_ip: str = "127.0.0.1") -> None:
    params = ray._private.parameter.RayParams(
        gcs_address=gcs_address,
        node_ip_address=node_ip,
        num_cpus=num_cpus,
        num_gpus=0,
        object_store_memory=150 * 1024 * 1024,
        min_worker_port=0,
        max_worker_port=0,
        include_log_monitor=False,
        node_manager_port=0,
    )
    params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("worker node started", flush=True)
    stop.wait()
    node.kill_all_processes(check_alive=False, allow_graceful=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
