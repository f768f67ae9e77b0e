"""What each incident kind means to an operator: severity, who raises it, what to do. Stage: config edge
(documentation data, rendered into docs/configuration.md by `watchdog.config.docs`).

The severities are those the detectors and `watchdog/data/log_patterns.yaml` give today (a detector may
escalate or lower one, as written); a test fails when an `IncidentKind` has no entry here, so a new kind
cannot ship undocumented. This module must never be read to decide anything at run time: the detectors
own their severities, this is their description.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchdog.model import IncidentKind


@dataclass(frozen=True, slots=True)
class KindDoc:
    """One row of the incident-kind table."""

    severity: str
    source: str
    action: str


K = IncidentKind
KIND_DOCS: dict[IncidentKind, KindDoc] = {
    K.SERVICE_DOWN: KindDoc("P0", "liveness probe fails past its threshold; or the runtime reports an exit",
                            "The server is not answering. The watchdog restarts it; if restarts do not help, read "
                            "the server log (`vllm-watchdog explain ID`) and the runtime's state."),
    K.NOT_READY: KindDoc("P1", "readiness probe (/v1/models) or canary fails while liveness passes; log lines (P1/P2)",
                         "Up but not serving: check the model load in the log, GPU memory, and the canary's error."),
    K.WRONG_MODEL: KindDoc("P1", "readiness: /v1/models does not list `model`",
                           "A different model is served: check the server's --model / --served-model-name and the "
                           "last config change (rolled back by the default policy)."),
    K.ENGINE_HUNG: KindDoc("P0", "stall detector (tokens stopped with requests queued); canary timing out while "
                           "/health answers",
                           "Capture a stack dump (py-spy dump --pid) before the restart; a hang right after a "
                           "restart points to the GPU or NCCL (reset the GPU, or reboot)."),
    K.ENGINE_DEAD: KindDoc("P0", "log line `EngineDeadError` / EngineCore fatal error; health detector",
                           "The engine process died inside a live API server: restart; read the first error above "
                           "the EngineDeadError line for the cause."),
    K.GPU_OOM: KindDoc("P0", "log line `CUDA out of memory`",
                       "The default ladder restarts, then lowers gpu_memory_utilization and max_num_seqs, then "
                       "rolls back and pages: check what else holds GPU memory (nvidia-smi)."),
    K.CONTAINER_OOM: KindDoc("P0", "runtime: OOMKilled / oom event",
                             "The host or container memory limit killed the server: raise the limit or lower "
                             "--swap-space / CPU offload."),
    K.STARTUP_MEMORY: KindDoc("P0", "log line at start-up (not enough memory for the KV cache / max_model_len)",
                              "The config does not fit the GPU: lower max_model_len or raise "
                              "gpu_memory_utilization; the default policy rolls back the last change."),
    K.STALE_GPU_MEMORY: KindDoc("P0", "log line: GPU memory held by a dead process",
                                "A previous server still holds GPU memory: find it (nvidia-smi), stop it, then "
                                "restart the server."),
    K.CUDA_ERROR: KindDoc("P0", "log line (illegal memory access, device-side assert, …)",
                          "Restart; if it recurs, check the driver/CUDA versions and the GPU (Xid in dmesg)."),
    K.GPU_ECC: KindDoc("P1", "GPU detector (uncorrected ECC P1, corrected over threshold P2); log line (P0)",
                       "Drain the GPU, reset it when idle (nvidia-smi -r) and open an RMA if it repeats."),
    K.GPU_LOST: KindDoc("P0", "GPU detector (NVML: GPU is lost / fallen off the bus, Xid 79)",
                        "Only a host reboot helps; container restarts are pointless. Move the load elsewhere."),
    K.GPU_NOT_VISIBLE: KindDoc("P1", "GPU detector (fewer than host.gpu.expected_count); log line (P0)",
                               "Check the driver, CUDA_VISIBLE_DEVICES, the container's --gpus and the device "
                               "plugin."),
    K.GPU_XID: KindDoc("P2", "NVML critical Xid event; severity per Xid (host.gpu.xid_severity)",
                       "Look the Xid up in NVIDIA's Xid catalog; 48/64/95 need a GPU reset, 79 a reboot."),
    K.GPU_THERMAL: KindDoc("P2", "GPU detector: temperature over host.gpu.temperature_c for temperature_for_s",
                           "Check cooling and fans; the GPU will throttle."),
    K.GPU_MEMORY_PRESSURE: KindDoc("P3", "GPU detector: memory used over memory_warn_percent (P3) / "
                                   "memory_high_percent (P2)",
                                   "Usually another process on the GPU: vLLM preallocates a fixed share."),
    K.NCCL_TIMEOUT: KindDoc("P0", "log line (NCCL watchdog timeout, collective operation timeout)",
                            "Tensor-parallel ranks stopped talking: restart; if it recurs, check NVLink/P2P "
                            "(NCCL_P2P_DISABLE=1) and --disable-custom-all-reduce."),
    K.PORT_CONFLICT: KindDoc("P0", "log line: address already in use",
                             "Something else holds the server's port: find it (ss -ltnp) and stop it."),
    K.CRASH_LOOP: KindDoc("P0", "health detector: crash_loop_exits exits within crash_loop_window_s",
                          "Restarts do not help: read the first error of the last start, roll back the last "
                          "config change."),
    K.CIRCUIT_BREAKER_OPEN: KindDoc("P1", "breaker detector (gauge or log line) while vLLM is ready",
                                    "The application's breaker stayed open after vLLM recovered: reset it "
                                    "(http_call step) or restart the application."),
    K.CERT_EXPIRING: KindDoc("P2", "TLS detector: days left under warn_days (P2) / critical_days (P1); expired P0",
                             "Renew the certificate and reload the server."),
    K.CERT_INVALID: KindDoc("P1", "TLS detector: key mismatch, wrong host name, not yet valid (P1); untrusted, key "
                            "permissions (P2); unreadable file (P3)",
                            "Follow the remedy in the incident: it names the file and the defect."),
    K.DISK_LOW: KindDoc("P2", "disk detector: free space or inodes under warn (P2) / critical (P1)",
                        "Free space: the default policy prunes Docker's dangling images/build cache, then pages."),
    K.DISK_READONLY: KindDoc("P1", "disk detector: a path with expect_writable is mounted read-only",
                             "The filesystem turned read-only (I/O errors?): check dmesg and remount or replace."),
    K.HOST_MEMORY_HIGH: KindDoc("P1", "host memory detector: used % over threshold_percent for for_s",
                                "Find the process using memory; the kernel OOM killer may be next."),
    K.LATENCY_SLA: KindDoc("P1", "SLA detector: P95/P99 end-to-end latency over p95_latency_s / p99_latency_s",
                           "Check queue depth and KV-cache usage; scale out or lower max_num_seqs."),
    K.ERROR_RATE_SLA: KindDoc("P1", "SLA detector: error rate over error_rate for error_for_s",
                              "Read the server log for the failing requests; restart if the engine is dead."),
    K.THROUGHPUT_SLA: KindDoc("P2", "SLA detector: finished req/s under min_throughput_rps while requests wait",
                              "Demand exceeds capacity: scale out, or look for a degraded GPU."),
    K.KV_CACHE_PRESSURE: KindDoc("P2", "SLA detector: KV-cache usage over kv_cache_usage for kv_cache_for_s",
                                 "Requests will be preempted: lower max_num_seqs or max_model_len, or scale out."),
    K.PREEMPTIONS: KindDoc("P2", "SLA detector: preemption rate over preemptions_per_s",
                           "Lower max_num_seqs / max_num_batched_tokens or raise gpu_memory_utilization."),
    K.METRICS_UNAVAILABLE: KindDoc("P2", "SLA detector: scrape_failures consecutive failed /metrics scrapes (P2); "
                                   "pages without vllm:* metrics (P3)",
                                   "The SLA checks are blind: check /metrics (--disable-log-stats, a proxy)."),
    K.DOCKER_UNREACHABLE: KindDoc("P1", "docker runtime: the engine socket does not answer",
                                  "Start or fix dockerd; the watchdog waits and re-reads every container."),
    K.WATCHDOG_INTERNAL: KindDoc("P2", "host detectors: a check itself is stuck or cannot run (NVML hung, "
                                 "statvfs stuck, path missing P3)",
                                 "The watchdog is partly blind: fix what the incident names."),
    K.WATCHDOG_STATE_UNWRITABLE: KindDoc("P0", "the state database cannot be written (disk full, lock held)",
                                         "Free the state dir's disk or release the lock; until then incidents "
                                         "are only in memory."),
    K.OPERATOR_STOPPED: KindDoc("P3", "health detector: the server was stopped by an operator (not a crash)",
                                "Nothing, if intended: the watchdog does not restart it. Start it to resolve."),
    K.SATURATED: KindDoc("P2", "health detector: the canary times out while the queue is full (busy, not hung)",
                         "Capacity, not a fault: scale out or shed load."),
    K.FLEET_BREAKER_OPEN: KindDoc("P0", "fleet coordinator: more than fleet.breaker_percent of the group's targets "
                                  "are unhealthy (one incident for the whole group, target fleet:GROUP)",
                                  "A correlated fault: look for the shared cause (config rollout, driver, "
                                  "traffic). No host restarts anything until the share drops."),
    K.FLEET_COORDINATION_LOST: KindDoc("P1", "fleet coordinator: etcd gives this host no quorum answer",
                                       "Check etcd (`etcdctl endpoint health --cluster`). fail_closed: "
                                       "disruptive steps wait; fail_open: this host acts without a slot."),
}

__all__ = ["KIND_DOCS", "KindDoc"]
