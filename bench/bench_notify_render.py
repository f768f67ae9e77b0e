"""Bench: route + render + serialise N incident edges (the CPU part of a notification burst).

Run: .venv/bin/python bench/bench_notify_render.py [N]
Prints wall time for routing through the example tree and building Slack, PagerDuty, webhook
(signed) and Alertmanager bodies for each edge. No network.
"""

from __future__ import annotations

import base64
import os
import sys
import time

from watchdog.clock import FakeClock
from watchdog.model import EventKind, Notification, Severity
from watchdog.notify.notifiers.alertmanager import AlertmanagerNotifier, AlertmanagerReceiverConfig
from watchdog.notify.notifiers.pagerduty import PagerDutyNotifier, PagerDutyReceiverConfig
from watchdog.notify.notifiers.slack import SlackNotifier, SlackReceiverConfig
from watchdog.notify.notifiers.webhook import WebhookNotifier, WebhookReceiverConfig
from watchdog.notify.routing import Router, example_route


def edges(n: int) -> list[Notification]:
    sevs = list(Severity)
    kinds = list(EventKind)
    return [
        Notification(
            id=f"n-{i}",
            event=kinds[i % len(kinds)],
            incident_id=i,
            fingerprint=f"{i:024x}",
            target=f"vllm-{i % 8}",
            kind="service_down",
            severity=sevs[i % 4],
            title="down",
            summary="GET /health: connection refused",
            created_at=1_800_000_000.0 + i,
            opened_at=1_800_000_000.0,
            resolved_at=1_800_000_500.0 if kinds[i % len(kinds)] is EventKind.RESOLVED else None,
            labels={"gpu": str(i % 8)},
            details={
                "probes": [{"probe": "liveness", "status": "fail", "summary": "connection refused"}],
                "log_line": "torch.OutOfMemoryError: CUDA out of memory",
                "metrics": {"vllm:gpu_cache_usage_perc": 0.99},
                "runbook": "Lower --gpu-memory-utilization and restart.",
            },
            status_url="http://127.0.0.1:9321/",
        )
        for i in range(n)
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    os.environ["BENCH_SLACK"] = "http://127.0.0.1:1/services/a/b/c"
    os.environ["BENCH_PD"] = "k" * 32
    os.environ["BENCH_WHSEC"] = "whsec_" + base64.b64encode(b"x" * 32).decode()
    clock = FakeClock()
    slack = SlackNotifier("s", SlackReceiverConfig(url_env="BENCH_SLACK"), clock=clock)
    pd = PagerDutyNotifier("p", PagerDutyReceiverConfig(routing_key_env="BENCH_PD"), clock=clock)
    hook = WebhookNotifier("w", WebhookReceiverConfig(url="http://127.0.0.1:1/", secret_env="BENCH_WHSEC"), clock=clock)
    am = AlertmanagerNotifier("a", AlertmanagerReceiverConfig(urls=["http://127.0.0.1:1"]), clock=clock)
    router = Router(example_route())
    items = edges(n)
    t0 = time.perf_counter()
    routed = sum(len(router.route(x, 1_800_000_000.0)) for x in items)
    t1 = time.perf_counter()
    size = 0
    for x in items:
        size += len(slack.payload(x)) + len(pd.body_bytes(x)) + len(am.alerts(x))
        body = hook.body(x)
        hook.headers_for(x, body)
        size += len(body)
    t2 = time.perf_counter()
    print(f"edges={n} routed_receivers={routed}")
    print(f"route: {(t1 - t0) * 1000:.1f} ms total, {(t1 - t0) / n * 1e6:.1f} us/edge")
    print(f"render+serialise 4 receivers: {(t2 - t1) * 1000:.1f} ms total, {(t2 - t1) / n * 1e6:.1f} us/edge")


if __name__ == "__main__":
    main()
