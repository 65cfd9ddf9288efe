# Ulak: a small two-stage image.
#
#   docker build -t ulak .
#   docker run -v $PWD/ulak.toml:/etc/ulak/ulak.toml:ro -v ulak-data:/var/lib/ulak \
#       -e ULAK_SHOP_KEY=... -p 8080:8080 ulak
#
# The config must listen on 0.0.0.0 ([http] listen = "0.0.0.0:8080") to be reachable from
# outside the container, and keep SQLite under the data volume
# ([store] url = "sqlite:///var/lib/ulak/ulak.db", the default).

# --- build: wheels for Ulak and every dependency (compilers stay in this stage) ------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols ./protocols
COPY gateway ./gateway
COPY queues ./queues
COPY benchmarks ./benchmarks
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels in a clean interpreter, an unprivileged user ---------------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 ulak \
    && useradd --system --uid 10001 --gid ulak --home-dir /var/lib/ulak --no-create-home \
        --shell /usr/sbin/nologin ulak \
    && mkdir -p /etc/ulak /var/lib/ulak \
    && chown ulak:ulak /var/lib/ulak
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels ulak && rm -rf /wheels

# The config is mounted read-only at /etc/ulak; messages, consent and OTP state live in the
# SQLite database on the data volume (the volume must stay writable by uid 10001).
VOLUME ["/var/lib/ulak"]
WORKDIR /var/lib/ulak
USER ulak:ulak
EXPOSE 8080

# /healthz answers while the process serves HTTP. The port comes from ULAK_HEALTH_URL when the
# config listens elsewhere. Python, because slim images have no curl.
ENV ULAK_HEALTH_URL=http://127.0.0.1:8080/healthz
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['ULAK_HEALTH_URL'], timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop) drains the binds and commits before exit; give it time with
# `docker stop -t 30` or `stop_grace_period` in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ulak"]
CMD ["run", "-c", "/etc/ulak/ulak.toml"]
