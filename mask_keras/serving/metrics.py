"""The service's Prometheus metrics (prometheus-client), one registry per app.

Exposed at ``GET /metrics`` in the Prometheus text format:

* ``mask_keras_requests_total{route, status}``: every answered request, refusals included
  (4xx, 408 slow bodies, 503 over the connection bound);
* ``mask_keras_request_seconds{route}``: a latency histogram;
* ``mask_keras_batch_images``: a histogram of the images (rows) per model batch;
* ``mask_keras_errors_total{status}``: every request answered with 4xx or 5xx, by status;
* ``mask_keras_images_total``: images answered; ``mask_keras_in_flight``: requests in progress.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: latency buckets, seconds (a CPU service answers in milliseconds to a second)
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: batch-size buckets, images
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The app's counters and histograms, in their own registry (two apps in one process, as in
    the tests and benchmarks, do not share them)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mask_keras_requests", "Requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("mask_keras_request_seconds", "Request latency", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("mask_keras_batch_images", "Images (rows) per model batch", buckets=BATCH_BUCKETS,
                               registry=r)
        self.errors = Counter("mask_keras_errors", "Requests refused or failed, by status", ["status"], registry=r)
        self.images = Counter("mask_keras_images", "Images answered", registry=r)
        self.in_flight = Gauge("mask_keras_in_flight", "Requests in progress", registry=r)

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request.

        Args:
            route: the path (``/predict``; unknown paths as ``other``).
            status: the HTTP status sent.
            seconds: how long it took.
        """
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()
