"""Shared helpers of the benchmarks: the machine, the synthetic data, pinning, tables.

Every benchmark reports ratios against a reference measured in the same run (the machine
may be shared and noisy); absolute numbers are printed with the machine they came from.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / ".data"
RESULTS = BENCH / "results"

#: the synthetic stand-in at the real 512x384 size (git-ignored, generated once)
DEFAULT_PEOPLE = 300
DEFAULT_EVAL_PEOPLE = 100


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(extra: dict | None = None) -> dict:
    """The machine the numbers came from (CPU model, cores, memory, versions, date)."""
    info = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
            "cores_online": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "python": platform.python_version()}
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        info["memory_gb"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        info["load_avg"] = tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        pass
    info.update(extra or {})
    return info


def versions() -> dict:
    out = {}
    for mod in ("keras", "jax", "tensorflow"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is there
            pass
    try:
        import jax

        out["jax_devices"] = ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    except Exception:  # noqa: BLE001
        pass
    return out


def machine_line(info: dict) -> str:
    load = info.get("load_avg")
    return (f"machine: {info['cpu']}, {info['cores_usable']} of {info['cores_online']} cores usable, "
            f"{info.get('memory_gb', '?')} GB; load average {load} (shared machine: expect noise); "
            f"{info['date']}")


def ensure_data(people: int = DEFAULT_PEOPLE, eval_people: int = DEFAULT_EVAL_PEOPLE, seed: int = 0) -> Path:
    """A synthetic set at the real 512x384 size under bench/.data, generated once."""
    root = DATA / f"synth-{people}-{eval_people}-s{seed}"
    if not (root / "train" / "train.csv").is_file():
        from mask_keras.data.synth import generate

        print(f"generating {root} ({people} + {eval_people} people at 512x384, once) ...", flush=True)
        generate(root, people=people, eval_people=eval_people, seed=seed, image_size=(512, 384), progress=False)
    return root


def pin(cores: int) -> list[int]:
    """Restrict this process (and its threads) to the first ``cores`` usable CPUs, like ``taskset -c``.

    Call before TensorFlow / JAX are imported: their thread pools are sized from the
    affinity mask."""
    cpus = sorted(os.sched_getaffinity(0))
    if cores > len(cpus):
        raise SystemExit(f"asked for {cores} cores, only {len(cpus)} usable ({cpus})")
    chosen = cpus[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def run_worker(script: str, args: list[str], timeout: float = 3600) -> dict:
    """Run ``python script args`` in a fresh process; it prints one ``RESULT {json}`` line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script} {' '.join(args)} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def emit(result: dict) -> None:
    """The worker side of :func:`run_worker`."""
    print("RESULT " + json.dumps(result), flush=True)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class Timer:
    """Wall seconds (``seconds``) and this process's CPU seconds, all threads, user + system
    (``cpu_seconds``) of a block. CPU time per item is steadier than wall time on a shared
    VM whose second vCPU comes and goes."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.c0 = _cpu()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = _cpu() - self.c0

    def elapsed(self) -> float:
        """Seconds since entering (inside the block)."""
        return time.perf_counter() - self.t0


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, text: str, data: dict) -> Path:
    """Write ``bench/results/<name>.md`` and ``.json`` (git-ignored; copy the table into README.md)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return RESULTS / f"{name}.md"


def check(goal: str, ok: bool) -> str:
    return f"{'MET' if ok else 'NOT MET'}: {goal}"
