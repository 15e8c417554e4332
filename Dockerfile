# mask-keras serve in a container: a trained run, K-fold, ensemble or export folder mounted at /model.
#
#   docker build -t mask-keras .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/efficientnet_gender:/model:ro" mask-keras
#   curl -F image=@photo.jpg http://127.0.0.1:8000/predict
#
# CUDA: build with the `cuda` extra (jax[cuda12] brings the CUDA libraries as wheels, so the
# same slim base works) and run with the GPUs visible:
#   docker build --build-arg EXTRAS=cuda -t mask-keras:cuda .
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/runs/x:/model:ro" mask-keras:cuda
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 KERAS_BACKEND=jax \
    JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mask_keras ./mask_keras
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && useradd --create-home --uid 1000 serve
USER serve

EXPOSE 8000
# SIGTERM (docker stop) lets the requests in progress finish, then the server exits
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["mask-keras", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
