# Ulak: a small two-stage image. The build stage makes wheels; the runtime stage installs them
# into a clean interpreter and runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols ./protocols
COPY gateway ./gateway
COPY queues ./queues
COPY benchmarks ./benchmarks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/ulak --create-home ulak
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER ulak
WORKDIR /var/lib/ulak
# Configuration is mounted at /etc/ulak/ulak.toml.
VOLUME ["/etc/ulak", "/var/lib/ulak"]
ENTRYPOINT ["ulak"]
CMD ["bench", "codec"]
