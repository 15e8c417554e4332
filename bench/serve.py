"""The HTTP service under load: batched serving against one request at a time, same run.

    python bench/serve.py                               # the demo artifact (make demo), 8 clients x 25 requests
    python bench/serve.py --artifact runs/x --clients 8 --requests 25 --max-batch 16

Starts ``mask_keras.serve`` twice on 127.0.0.1 (a free port) in this process, with the same
artifact: "batched" (``--max-batch``, ``--max-wait-ms``) and "one at a time" (max batch 1:
every image its own model call). Each is warmed up (compiles), then ``--clients`` threads
each send ``--requests`` POST /predict requests of one evaluation photo (raw JPEG bytes),
bounded by ``--limit-s`` seconds per run. Reports requests/s, p50/p99 latency and errors;
the goal is zero errors and batched serving faster than one at a time.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def load(srv, photos: list[bytes], clients: int, requests: int, limit_s: float) -> dict:
    """``clients`` threads x ``requests`` POSTs (stopping at ``limit_s``): rate, latencies, errors."""
    deadline = time.perf_counter() + limit_s

    def client(c: int):
        lat, errors = [], 0
        for i in range(requests):
            if time.perf_counter() > deadline:
                break
            body = photos[(c * requests + i) % len(photos)]
            req = urllib.request.Request(srv.url("/predict"), data=body, headers={"Content-Type": "image/jpeg"})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
                    errors += r.status != 200
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            lat.append(time.perf_counter() - t)
        return lat, errors

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        out = list(ex.map(client, range(clients)))
    wall = time.perf_counter() - t0
    lat = sorted(x for l_, _ in out for x in l_)
    n = len(lat)
    return {"requests": n, "errors": sum(e for _, e in out), "seconds": wall, "rps": n / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=str(common.ROOT / "runs" / "efficientnet_gender"),
                    help="run, K-fold or ensemble directory (default: the demo's; run make demo first)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--limit-s", type=float, default=120.0, help="per run")
    a = ap.parse_args(argv)
    if not Path(a.artifact).exists():
        raise SystemExit(f"{a.artifact}: not found; train one first (make demo) or pass --artifact DIR")
    import mask_keras  # noqa: F401  (JAX backend)
    from mask_keras.predictor import Predictor
    from mask_keras.serve import BackgroundServer, create_app

    root = common.ensure_data()
    photos = [p.read_bytes() for p in sorted((root / "eval" / "images").iterdir())[:32]]
    predictor = Predictor.load(a.artifact)
    results = {}
    for name, batch in (("batched", a.max_batch), ("one at a time", 1)):
        with BackgroundServer(create_app(predictor, max_batch=batch, max_wait_ms=a.max_wait_ms)) as srv:
            load(srv, photos, min(a.clients, 4), 2, 120)  # warm-up: compiles every batch shape it meets
            print(f"{name}: {a.clients} clients x {a.requests} requests ...", flush=True)
            r = load(srv, photos, a.clients, a.requests, a.limit_s)
            stats = __import__("json").loads(urllib.request.urlopen(srv.url("/metadata")).read())["stats"]
            r.update(max_batch=batch, largest_batch=stats["largest_batch"],
                     mean_batch=stats["images"] / max(1, stats["batches"]))
            results[name] = r
            print(f"  {r['rps']:.1f} requests/s, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                  f"{r['errors']} errors, mean batch {r['mean_batch']:.1f}", flush=True)
    ratio = results["batched"]["rps"] / results["one at a time"]["rps"]
    info = common.machine()
    rows = [[k, r["max_batch"], r["requests"], r["errors"], round(r["rps"], 1), round(r["p50_ms"]), round(r["p99_ms"]),
             round(r["mean_batch"], 1)] for k, r in results.items()]
    goals = [common.check(f"zero errors: {sum(r['errors'] for r in results.values())}",
                          all(r["errors"] == 0 for r in results.values())),
             common.check(f"batched serving faster than one request at a time: {ratio:.2f}x", ratio > 1.0)]
    text = "\n".join([f"## Serving under load: {a.clients} clients on 127.0.0.1, artifact {a.artifact}", "",
                      common.machine_line(info), "",
                      common.table(["mode", "max batch", "requests", "errors", "requests/s", "p50 ms", "p99 ms",
                                    "mean images per model call"], rows), "", *[f"- {g}" for g in goals]])
    print(text)
    common.save("serve", text, {"machine": info, "results": results, "ratio": ratio, "args": vars(a)})
    return results


if __name__ == "__main__":
    main()
