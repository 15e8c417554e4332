"""The HTTP service under load against its own in-process limit, same run, same photo.

    python bench/serve.py                         # the demo artifact (make demo); 1, 8 and 32 clients
    python bench/serve.py --quick                 # shorter loads (what `make bench-quick` runs)
    python bench/serve.py --artifact runs/x --clients 1,8,32 --seconds 6

Measured in this process first (the service idle): **single**, one photo decoded, cropped and
resized and one model call on it (the engine's pieces: :class:`ImageInput`, ``model_pixels``,
the compiled runner), p50 of 50; **batched limit**, images/s of decode plus batch-16 model
calls. Then ``mask-keras serve`` runs as its own process on 127.0.0.1 (a free port) twice, with
the same artifact: batched (``--max-batch 16``) and one at a time (``--max-batch 1``), and three
clients load each: ``wrk`` (keep-alive, a Lua script POSTing the JPEG), ``ab`` (apache2-utils)
and this script's own client (urllib threads, a new connection per request), at 1, 8 and 32
concurrent clients, each load bounded in time. Goals (issue 27): one client's p50 at most 5x
the single in-process answer; 8 clients at least 0.25x the batched limit; zero errors.
``make bench`` installs wrk and apache2-utils (Debian); without them their rows are skipped.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def in_process(artifact: str, photo: bytes, batch: int = 16) -> dict:
    """The engine's own work on the photo: single (decode + one model call) and the batched limit."""
    import numpy as np

    from mask_keras.inference import ImageInput, Predictor
    from mask_keras.inference.images import crop_windows, model_pixels

    pred = Predictor.load(artifact)
    m = pred.members[0]
    p = m.preprocess

    def decode():
        item = ImageInput.from_bytes("photo", photo)
        return model_pixels(item, p, crop_windows(item.height, item.width, p))

    m.runner(decode())
    m.runner(np.concatenate([decode()] * batch))
    single = []
    for _ in range(50):
        t = time.perf_counter()
        [mm.runner(decode()) for mm in pred.members]
        single.append(time.perf_counter() - t)
    t = time.perf_counter()
    rounds = 8
    for _ in range(rounds):
        x = np.concatenate([decode() for _ in range(batch)])
        [mm.runner(x) for mm in pred.members]
    limit = rounds * batch / (time.perf_counter() - t)
    pred.close()
    return {"single_ms": 1000 * statistics.median(single), "batched_limit_ips": limit}


class Service:
    """``mask-keras serve`` as its own process on a free port; stops on leaving the block."""

    def __init__(self, artifact: str, max_batch: int):
        from mask_keras.serving import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "mask_keras", "serve", artifact, "--port", str(self.port),
                                      "--max-batch", str(max_batch)], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "KERAS_BACKEND": "jax"})
        for _ in range(600):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"mask-keras serve did not start:\n{self.log.read()[-3000:]}")

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(self.url + "/metadata", timeout=10).read())["stats"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def own_client(url: str, photo: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads POSTing for ``seconds``: rate, p50/p99, errors."""
    deadline = time.perf_counter() + seconds

    def client(_):
        lat, errors = [], 0
        while time.perf_counter() < deadline:
            req = urllib.request.Request(url + "/predict", data=photo, headers={"Content-Type": "image/jpeg"})
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
    return {"requests": n, "errors": sum(e for _, e in out), "rps": n / wall,
            "p50_ms": 1000 * lat[n // 2], "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))]}


def _ms(text: str) -> float:
    v, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, photo_file: Path, clients: int, seconds: float) -> dict | None:
    """wrk with keep-alive connections, a Lua script POSTing the photo."""
    if not shutil.which("wrk"):
        return None
    lua = photo_file.with_suffix(".lua")
    lua.write_text(f'local f = io.open("{photo_file}", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*all")\n'
                   f'f:close()\nwrk.headers["Content-Type"] = "image/jpeg"\n')
    out = subprocess.run(["wrk", "-t", str(min(clients, 4)), "-c", str(clients), "-d", f"{seconds:g}s", "--latency",
                          "--timeout", "30s", "-s", str(lua), url + "/predict"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": n, "errors": (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            # the latency distribution's own lines ("     50%    6.30ms"), not "85.50%" in Thread Stats
            "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}


def ab(url: str, photo_file: Path, clients: int, seconds: float) -> dict | None:
    """ApacheBench, keep-alive, bounded by ``seconds`` (and at most 50,000 requests)."""
    if not shutil.which("ab"):
        return None
    out = subprocess.run(["ab", "-q", "-k", "-c", str(clients), "-t", f"{seconds:g}", "-n", "50000", "-s", "30",
                          "-p", str(photo_file), "-T", "image/jpeg", url + "/predict"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return {"requests": int(re.search(r"Complete requests:\s+(\d+)", out).group(1)),
            "errors": int(re.search(r"Failed requests:\s+(\d+)", out).group(1)) + (int(non2xx.group(1)) if non2xx else 0),
            "rps": float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1)),
            "p50_ms": float(re.search(r"\n\s+50%\s+(\d+)", out).group(1)),
            "p99_ms": float(re.search(r"\n\s+99%\s+(\d+)", out).group(1))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=str(common.ROOT / "runs" / "efficientnet_gender"),
                    help="run, K-fold, ensemble or export folder (default: the demo's; run make demo first)")
    ap.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    ap.add_argument("--seconds", type=float, default=6.0, help="each load's length")
    ap.add_argument("--quick", action="store_true", help="2-second loads, own client and wrk only")
    a = ap.parse_args(argv)
    if not Path(a.artifact).exists():
        raise SystemExit(f"{a.artifact}: not found; train one first (make demo) or pass --artifact DIR")
    seconds = 2.0 if a.quick else a.seconds
    clients = [int(c) for c in a.clients.split(",")]
    root = common.ensure_data()
    photo_path = sorted((root / "eval" / "images").iterdir())[0]
    photo = photo_path.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    photo_file = tmp / "photo.jpg"
    photo_file.write_bytes(photo)
    limits = in_process(a.artifact, photo)
    print(f"in process: single {limits['single_ms']:.1f} ms, batched limit {limits['batched_limit_ips']:.0f} images/s",
          flush=True)
    tools = {"own client": own_client, "wrk": wrk} if a.quick else {"own client": own_client, "wrk": wrk, "ab": ab}
    results = []
    for mode, batch in (("batched", 16), ("one at a time", 1)):
        with Service(a.artifact, batch) as svc:
            own_client(svc.url, photo, 4, 1.0)  # warm-up
            for tool, fn in tools.items():
                for c in clients:
                    r = fn(svc.url, photo_file, c, seconds) if tool != "own client" else fn(svc.url, photo, c, seconds)
                    if r is None:
                        print(f"  {tool}: not installed (make bench installs wrk and apache2-utils)", flush=True)
                        break
                    r.update(mode=mode, tool=tool, clients=c)
                    results.append(r)
                    print(f"{mode:>13} {tool:>10} {c:>3} clients: {r['rps']:7.1f} requests/s, p50 {r['p50_ms']:7.1f} ms, "
                          f"p99 {r['p99_ms']:7.1f} ms, {r['errors']} errors", flush=True)
            s = svc.stats()
            for r in results:
                if r["mode"] == mode:
                    r["mean_batch"] = s["images"] / max(1, s["batches"])
    shutil.rmtree(tmp, ignore_errors=True)

    def pick(mode, c, tool=None):
        rows = [r for r in results if r["mode"] == mode and r["clients"] == c and (tool is None or r["tool"] == tool)]
        return rows[0] if rows else None

    one = pick("batched", 1, "wrk") or pick("batched", 1)
    eight = pick("batched", 8, "wrk") or pick("batched", 8)
    goals = []
    if one:
        goals.append(common.check(f"one client's p50 ({one['tool']}) {one['p50_ms']:.1f} ms <= 5x the single in-process "
                                  f"answer {limits['single_ms']:.1f} ms: {one['p50_ms'] / limits['single_ms']:.1f}x",
                                  one["p50_ms"] <= 5 * limits["single_ms"]))
    if eight:
        ratio = eight["rps"] / limits["batched_limit_ips"]
        goals.append(common.check(f"8 clients ({eight['tool']}) {eight['rps']:.0f} requests/s >= 0.25x the batched "
                                  f"limit {limits['batched_limit_ips']:.0f} images/s: {ratio:.2f}x", ratio >= 0.25))
    goals.append(common.check(f"zero errors: {sum(r['errors'] for r in results)}", all(r["errors"] == 0 for r in results)))
    info = common.machine()
    rows = [[r["mode"], r["tool"], r["clients"], r["requests"], r["errors"], round(r["rps"], 1), round(r["p50_ms"], 1),
             round(r["p99_ms"], 1), round(r.get("mean_batch", 0), 1)] for r in results]
    text = "\n".join([f"## Serving under load: `mask-keras serve` on 127.0.0.1, artifact {a.artifact}", "",
                      common.machine_line(info), "",
                      f"In this process, same run: one photo decoded + one model call {limits['single_ms']:.1f} ms "
                      f"(p50); decode + batch-16 model calls {limits['batched_limit_ips']:.0f} images/s.", "",
                      common.table(["mode", "client", "clients", "requests", "errors", "requests/s", "p50 ms", "p99 ms",
                                    "mean images per model call"], rows), "", *[f"- {g}" for g in goals]])
    print(text)
    common.save("serve", text, {"machine": info, "limits": limits, "results": results, "args": vars(a)})
    return results


if __name__ == "__main__":
    main()
