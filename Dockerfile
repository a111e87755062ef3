# aftm-gateway container image.
#
# Two stages: `build` installs the gateway into a virtualenv; the runtime stage copies only that
# virtualenv onto a clean slim Python and runs it as an unprivileged numeric user (so Kubernetes can
# verify runAsNonRoot). Nothing is written outside /var/lib/aftm-gateway (the data volume, home of the
# default SQLite store) and /tmp, so the root filesystem can be mounted read-only.
#
# No secret is passed at build time or baked into a layer: the config (mounted at
# /etc/aftm-gateway/gateway.yaml) names its credentials through <key>_env / <key>_file, supplied at run time.
#
# Python matches the interpreter CI tests on (requires-python >= 3.11).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Exact versions, every file checked against its locked sha256 (requirements/*.txt, scripts/lock). The
# runtime set goes into the venv that ships; pip and setuptools, which only build the wheel, stay in
# /opt/build. Dependencies come before the source, so a code change reuses this layer.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes -r requirements/build.txt \
    && python -m venv /opt/aftm-gateway \
    && /opt/aftm-gateway/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.txt
# The build context is an allow-list (.dockerignore) without gateway_tools/ (simulators, drills, chaos,
# demo), so the wheel holds gateway and policies only (tests/deploy/test_packaging.py builds it).
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
COPY policies ./policies
# The project itself resolves nothing (--no-deps); `pip check` fails the build if the lock no longer
# satisfies pyproject.toml. Compile ahead: with a read-only root filesystem Python could not write .pyc
# files at start.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheel . \
    && /opt/aftm-gateway/bin/pip install --no-cache-dir --no-deps /tmp/wheel/aftm_gateway-*.whl \
    && /opt/aftm-gateway/bin/pip check \
    && /opt/aftm-gateway/bin/python -m compileall -q /opt/aftm-gateway

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aftm-gateway" \
      org.opencontainers.image.description="Failover-aware HTTP gateway for Oracle Responsys (REST and SOAP)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 aftm \
    && useradd --system --uid 10001 --gid aftm --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin aftm \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/aftm-gateway \
    && install -d -m 0755 /etc/aftm-gateway
COPY --from=build /opt/aftm-gateway /opt/aftm-gateway
ENV PATH=/opt/aftm-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/aftm-gateway
VOLUME ["/var/lib/aftm-gateway"]
USER 10001:10001
EXPOSE 8080
# For Docker and Compose; Kubernetes ignores HEALTHCHECK and uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# The gateway stops accepting on SIGTERM and drains in-flight requests before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aftm-gateway"]
CMD ["serve", "--config", "/etc/aftm-gateway/gateway.yaml", "--host", "0.0.0.0", "--port", "8080"]
