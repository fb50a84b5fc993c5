"""Prometheus metrics, one registry per node so several nodes can live in one process (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "dicomnode_images_received", "Instances acknowledged with 0x0000", registry=r
        )
        self.rejected = Counter(
            "dicomnode_stores_rejected", "C-STORE requests answered with a failure status",
            ["status"], registry=r,
        )  # fmt: skip
        self.skipped = Counter(
            "dicomnode_images_skipped", "Instances recorded as not classifiable", registry=r
        )
        self.classified = Counter("dicomnode_images_classified", "Images classified", registry=r)
        self.failed = Counter("dicomnode_jobs_failed", "Jobs that ended failed", registry=r)
        self.delivered = Counter(
            "dicomnode_results_delivered", "Result objects stored at a destination", registry=r
        )
        self.delivery_retries = Counter(
            "dicomnode_delivery_retries", "Failed delivery attempts that will be retried",
            registry=r,
        )  # fmt: skip
        self.deferred = Counter(
            "dicomnode_jobs_deferred",
            "Images or study reports put back to wait for a resource (disk full, …) and retried",
            ["kind", "cause"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "dicomnode_queue_depth", "Jobs waiting to be processed", registry=r
        )
        self.inference_seconds = Histogram(
            "dicomnode_inference_seconds", "Model inference time per image", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2),
        )  # fmt: skip
        self.end_to_end_seconds = Histogram(
            "dicomnode_end_to_end_seconds",
            "From receipt of an image to its secondary capture being stored at a destination",
            registry=r, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
