"""`mask-keras serve`: the real uvicorn server on 127.0.0.1 (a free port), real HTTP requests
(the standard library's client, raw sockets for misbehaving clients): answers equal
Predictor's on the same files, concurrent requests batched, every kind of bad input a 4xx JSON
error while the service keeps serving, request ids, Prometheus metrics, the OpenAPI schema,
slow bodies (408), the in-flight bound (503 + Retry-After), gone clients, SIGTERM.

The artifact is an untrained tiny model saved with its config (as in test_predictor.py).
"""
from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from mask_keras.config import Config

SIZE = (32, 24)


def _artifact(path, task="multi", seed=0):
    import keras

    from mask_keras.models.build import build_model

    cfg = Config().override(**{"train.task": task, "model.backbone": "tiny_cnn", "model.weights": None,
                               "preprocess.image_size": SIZE, "preprocess.crop": "center",
                               "preprocess.crop_size": (100, 80), "train.out_dir": str(path)})
    keras.utils.set_random_seed(seed)
    path.mkdir(parents=True)
    build_model(cfg.model, task, SIZE).save(path / "model.keras")
    cfg.save(path / "config.json")
    (path / "metrics.json").write_text(json.dumps({"macro_f1": 0.5, "task": task}))
    return path


def _request(server, path, data=None, headers=None, method=None):
    req = urllib.request.Request(server.url(path), data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def _multipart(files):
    boundary = uuid.uuid4().hex
    parts = []
    for i, (name, data) in enumerate(files):
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image{i}\"; filename=\"{name}\"\r\n"
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _json(resp):
    status, ctype, body = resp
    assert ctype.startswith("application/json"), (status, ctype, body[:200])
    return status, json.loads(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory, synth_root):
    from mask_keras.inference import Predictor
    from mask_keras.serving import BackgroundServer, Limits, create_app

    d = tmp_path_factory.mktemp("serve")
    run = _artifact(d / "multi")
    photos = sorted((synth_root / "eval" / "images").iterdir())[:4]
    for p in photos:
        shutil.copy(p, d / p.name)
    predictor = Predictor.load(run)
    app = create_app(predictor, max_batch=8, max_wait_ms=300,
                     limits=Limits(max_body_mb=1.0, max_images=3, max_pixels=5_000_000))
    server = BackgroundServer(app, limit_s=600)
    yield server, predictor, [d / p.name for p in photos], run
    server.stop()


def test_health_metadata_and_page(served):
    server, predictor, _, run = served
    assert _json(_request(server, "/health")) == (200, {"status": "ok"})
    status, meta = _json(_request(server, "/metadata"))
    digest = hashlib.sha256((run / "model.keras").read_bytes() + (run / "config.json").read_bytes()).hexdigest()
    assert status == 200 and meta["artifact_sha256"] == digest
    assert meta["tasks"] == ["mask", "gender", "age"] and meta["models"][0]["backbone"] == "tiny_cnn"
    assert meta["models"][0]["image_size"] == list(SIZE) and meta["models"][0]["metrics"]["macro_f1"] == 0.5
    assert meta["limits"] == {"max_body_mb": 1.0, "max_images": 3, "max_pixels": 5_000_000,
                              "body_timeout_s": 30.0, "max_in_flight": 64}
    status, ctype, body = _request(server, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'fetch("/predict"' in body and b'type="file"' in body and b"crop_box" in body
    # the OpenAPI schema documents /predict's three body types and its refusals; /docs renders it
    status, schema = _json(_request(server, "/openapi.json"))
    post = schema["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/jpeg", "application/json"} <= set(post["requestBody"]["content"])
    assert {"400", "413", "415", "503"} <= set(post["responses"])
    assert {"/health", "/metadata", "/metrics"} <= set(schema["paths"])
    status, ctype, body = _request(server, "/docs")
    assert status == 200 and b"openapi.json" in body


def test_answers_equal_the_predictor_on_the_same_files(served):
    server, predictor, photos, _ = served
    body, headers = _multipart([(p.name, p.read_bytes()) for p in photos[:2]])
    status, out = _json(_request(server, "/predict", body, headers))
    assert status == 200 and len(out["predictions"]) == 2
    ref = predictor.predict_files(photos[:2])
    for row, (_, r) in zip(out["predictions"], ref.iterrows()):
        assert row["class"] == int(r["class"]) and row["mask"] == r["mask"] and row["age"] == r["age"]
        np.testing.assert_allclose([row[f"p{c}"] for c in range(18)], [r[f"p{c}"] for c in range(18)], atol=1e-5)
        h, w = Image.open(r["path"]).size[::-1]
        y0, x0 = (h - min(h, 100)) // 2, (w - min(w, 80)) // 2
        assert row["crop_box"] == [y0, x0, y0 + min(h, 100), x0 + min(w, 80)]
    # the raw body: one image
    status, out = _json(_request(server, "/predict", photos[2].read_bytes(), {"Content-Type": "image/jpeg"}))
    assert status == 200 and out["predictions"][0]["class"] == int(predictor.predict_files([photos[2]])["class"][0])
    # JSON with base64 images: the same answers
    doc = {"images": [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in photos[:2]]}
    status, js = _json(_request(server, "/predict", json.dumps(doc).encode(), {"Content-Type": "application/json"}))
    assert status == 200 and [r["class"] for r in js["predictions"]] == [int(c) for c in ref["class"]]
    one = {"image": base64.b64encode(photos[0].read_bytes()).decode()}
    status, js = _json(_request(server, "/predict", json.dumps(one).encode(), {"Content-Type": "application/json"}))
    assert status == 200 and js["predictions"][0]["class"] == int(ref["class"][0])
    # every answer carries its request id: the client's own, or a new one
    req = urllib.request.Request(server.url("/predict"), data=photos[0].read_bytes(),
                                 headers={"Content-Type": "image/jpeg", "X-Request-ID": "door-7"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["x-request-id"] == "door-7" and json.loads(r.read())["request_id"] == "door-7"
    status, ctype, body = _request(server, "/predict", b"junk", {"Content-Type": "image/jpeg"})
    assert status == 400 and len(json.loads(body)["request_id"]) == 32


def test_concurrent_requests_are_batched_and_answered_right(served):
    server, predictor, photos, _ = served
    before = _json(_request(server, "/metadata"))[1]["stats"]
    ref = {p.name: int(predictor.predict_files([p])["class"][0]) for p in photos}
    jobs = [photos[i % len(photos)] for i in range(8)]

    def one(p):
        return p.name, _json(_request(server, "/predict", p.read_bytes(), {"Content-Type": "image/jpeg"}))

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, jobs))
    for name, (status, out) in results:
        assert status == 200 and out["predictions"][0]["class"] == ref[name]
    after = _json(_request(server, "/metadata"))[1]["stats"]
    assert after["requests"] - before["requests"] == 8 and after["images"] - before["images"] == 8
    assert after["batches"] - before["batches"] < 8 and after["largest_batch"] > 1  # several images per model call


def _png(w, h, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_requests_get_4xx_json_and_the_service_goes_on(served):
    server, _, photos, _ = served
    jpeg = photos[0].read_bytes()
    cases = {
        "not an image": (400, b"hello world", {"Content-Type": "image/jpeg"}, "not a JPEG/PNG"),
        "truncated": (400, jpeg[:3000], {"Content-Type": "image/jpeg"}, "cannot decode"),
        # 20000 x 20000 one-bit pixels: a ~50 KB file that would decode to 1.2 GB of RGB
        "decompression bomb": (413, _png(20000, 20000, "1"), {"Content-Type": "image/png"}, "over the limit"),
        "body too big": (413, b"\xff\xd8\xff" + bytes(1_200_000), {"Content-Type": "image/jpeg"}, "max-body-mb"),
        "too many": (413, *_multipart([("a.jpg", jpeg)] * 4), "at most 3"),
        "no file": (400, *_multipart([]), "multipart"),
        "content type": (415, jpeg, {"Content-Type": "text/plain"}, "Content-Type"),
        "bad json": (400, b"{nope", {"Content-Type": "application/json"}, "JSON body"),
        "json without images": (400, b'{"photo": 1}', {"Content-Type": "application/json"}, '"images"'),
        "bad base64": (400, b'{"images": [{"data": "@@@"}]}', {"Content-Type": "application/json"}, "not base64"),
    }
    for what, (code, body, headers, words) in cases.items():
        status, out = _json(_request(server, "/predict", body, headers))
        assert status == code and words in out["error"], (what, status, out)
    assert _json(_request(server, "/nope"))[0] == 404
    assert _json(_request(server, "/predict"))[0] == 405  # GET
    status, out = _json(_request(server, "/predict", jpeg, {"Content-Type": "image/jpeg"}))
    assert status == 200 and len(out["predictions"]) == 1
    # every refusal is counted in /metrics, by status
    from prometheus_client.parser import text_string_to_metric_families

    status, ctype, text = _request(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
    errors = {s.labels["status"]: s.value for s in fams["mask_keras_errors"].samples if s.name.endswith("_total")}
    assert errors["400"] >= 6 and errors["413"] >= 3 and errors["415"] >= 1 and errors["404"] >= 1
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in fams["mask_keras_requests"].samples
                if s.name.endswith("_total")}
    assert requests[("/predict", "200")] >= 1 and requests[("other", "404")] >= 1
    batches = [s for s in fams["mask_keras_batch_images"].samples if s.name.endswith("_count")]
    assert batches[0].value >= 1
    assert any(s.name == "mask_keras_request_seconds_bucket" for s in fams["mask_keras_request_seconds"].samples)


def _raw(server, head: bytes, body: bytes = b""):
    """A socket that sent ``head`` (and ``body``) and may send more later."""
    s = socket.create_connection((server.host, server.port), timeout=60)
    s.sendall(head + body)
    return s


def _read_status(sock) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_slow_bodies_time_out_alone_and_the_bound_answers_503(tmp_path, synth_root):
    from mask_keras.inference import Predictor
    from mask_keras.serving import BackgroundServer, Limits, create_app

    run = _artifact(tmp_path / "m")
    photo = sorted((synth_root / "eval" / "images").iterdir())[0].read_bytes()
    app = create_app(Predictor.load(run), limits=Limits(body_timeout_s=3.0, max_in_flight=2), warm_up=False)
    with BackgroundServer(app, limit_s=120) as server:
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(photo)}\r\n\r\n").encode()
        slow = [_raw(server, head, photo[:100]) for _ in range(2)]  # two clients that stall mid-body
        time.sleep(0.5)
        t0 = time.perf_counter()
        status, ctype, body = _request(server, "/predict", photo, {"Content-Type": "image/jpeg"})
        assert status == 503 and b"max-in-flight" in body  # at once, not after the slow ones
        assert time.perf_counter() - t0 < 2.5
        req = urllib.request.Request(server.url("/predict"), data=photo, headers={"Content-Type": "image/jpeg"})
        try:
            urllib.request.urlopen(req, timeout=30)
        except urllib.error.HTTPError as e:
            assert e.code == 503 and e.headers["Retry-After"] == "1"
        codes = [_read_status(s)[0] for s in slow]  # the slow ones: 408 once their time is up
        assert codes == [408, 408] and time.perf_counter() - t0 < 10
        for s in slow:
            s.close()
        # a client that sends a request and leaves at once does not break the queue
        for _ in range(3):
            _raw(server, head, photo).close()
        time.sleep(1.0)  # their requests finish into the void (each is milliseconds of work)
        status, ctype, body = _request(server, "/predict", photo, {"Content-Type": "image/jpeg"})
        assert status == 200 and len(json.loads(body)["predictions"]) == 1
        assert _json(_request(server, "/metadata"))[1]["stats"]["requests"] >= 3  # the gone ones were answered too
        text = _request(server, "/metrics")[2].decode()
        errors = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("mask_keras_errors_total")}
        assert errors["408"] == 2 and errors["503"] >= 2  # (a third gone client may have met the bound too)


@pytest.mark.slow
def test_sigterm_lets_requests_in_progress_finish(tmp_path, synth_root):
    from mask_keras.serving import free_port

    run = _artifact(tmp_path / "m")
    photo = sorted((synth_root / "eval" / "images").iterdir())[0].read_bytes()
    port = free_port()
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.Popen([sys.executable, "-m", "mask_keras", "serve", str(run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        # uvicorn's keep-alive timeout (5 s, set by serve): a connection left idle after its answer is closed
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = idle.recv(65536)
        t0 = time.perf_counter()
        while data:
            data = idle.recv(65536)
        assert 3 < time.perf_counter() - t0 < 15
        idle.close()
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nX-Request-ID: last-one\r\n"
                f"Content-Length: {len(photo)}\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(head + photo[:500])  # a request in progress when SIGTERM comes
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(photo[500:])
        status, _ = _read_status(sock)
        sock.close()
        assert status == 200  # it was answered before the server went
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn re-raises SIGTERM once it has shut down cleanly: the exit status says "ended by SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM), (proc.returncode, out[-2000:])
    assert "[last-one]" in out and "POST /predict 200" in out  # the request id in its log line
    assert "Waiting for connections to close" in out and "Finished server process" in out, out[-2000:]


def _docker_ok() -> bool:
    from shutil import which

    if not which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _docker_ok(), reason="no Docker daemon here: the image is built and run where one is")
def test_the_docker_image_serves_a_model(tmp_path, synth_root):
    from pathlib import Path

    from mask_keras.serving import free_port

    root = Path(__file__).resolve().parents[1]
    run = _artifact(tmp_path / "model")
    tag = f"mask-keras-test:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-t", tag, str(root)], check=True, timeout=1800)
    port = free_port()
    cid = subprocess.run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", "-v", f"{run}:/model:ro",
                          tag], check=True, capture_output=True, text=True).stdout.strip()
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        photo = sorted((synth_root / "eval" / "images").iterdir())[0].read_bytes()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=photo,
                                     headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200 and len(json.loads(r.read())["predictions"]) == 1
    finally:
        subprocess.run(["docker", "stop", cid], capture_output=True, timeout=60)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


def test_serve_stops_at_start_when_a_model_cannot_be_loaded(tmp_path, capsys):
    from mask_keras.cli import main
    from mask_keras.serving import free_port

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a keras file")
    Config().save(broken / "config.json")
    assert main(["serve", str(broken), "--port", str(free_port())]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "artifact not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- the page, in a browser
def _chromium():
    from shutil import which

    for browser in ("chromium", "chromium-browser", "google-chrome"):
        if which(browser) and which("chromedriver"):
            return which(browser), which("chromedriver")
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium + chromedriver (make test installs the Debian packages "
                                               "chromium and chromium-driver)")
def test_the_page_shows_the_crop_and_the_answers_of_the_api(served):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _, photos, _ = served
    browser, driver_path = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url("/"))
        file_input = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false;", file_input)
        file_input.send_keys(str(photos[0]))  # what "pick one" does
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "td.answer"))
        shown = {e.get_attribute("data-task"): e.text for e in driver.find_elements(By.CSS_SELECTOR, "td.answer")}
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.getElementById('canvas').width") > 0)
        size = driver.execute_script("const c = document.getElementById('canvas'); return [c.height, c.width];")
        # the crop rectangle's top edge, half-way along: drawn in green
        api = _json(_request(server, "/predict", photos[0].read_bytes(), {"Content-Type": "image/jpeg"}))[1]
        y0, x0, y1, x1 = api["predictions"][0]["crop_box"]
        pixel = driver.execute_script(
            "return Array.from(document.getElementById('canvas').getContext('2d')"
            ".getImageData(arguments[0], arguments[1], 1, 1).data);", (x0 + x1) // 2, y0)
    finally:
        driver.quit()
    p = api["predictions"][0]
    assert shown == {t: p[t] for t in ("mask", "gender", "age")}
    assert size == list(Image.open(photos[0]).size[::-1])
    assert pixel[1] > 150 and pixel[0] < 80 and pixel[2] < 80, pixel
