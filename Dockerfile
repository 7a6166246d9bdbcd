# syntax=docker/dockerfile:1
# The nudge server: `nudge serve` as an unprivileged user, gRPC on 50051, configured by NUDGE_*
# variables (see README.md). Redis and PostgreSQL run elsewhere. Build: `make image`.

# Both stages use the same base, so that the environment markers the wheels were resolved for
# (redis needs async-timeout only on Python < 3.11.3, for one) hold where they are installed.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: wheels of the project and of every runtime dependency (no dev extras) ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY clients/python/ clients/python/
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed into a clean image, nothing else ---------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUDGE_LISTEN=0.0.0.0:50051 \
    NUDGE_MIGRATIONS_DIR=/opt/nudge/migrations \
    NUDGE_SPOOL_DIR=/var/lib/nudge/spool
RUN groupadd --system --gid 10001 nudge \
    && useradd --system --uid 10001 --gid nudge --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nudge
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels nudge
COPY migrations/ /opt/nudge/migrations/
# Where decision-log rows wait while PostgreSQL is away: mount a named volume here so that a new
# container writes out what the old one left (README, "When PostgreSQL is down").
RUN mkdir -p /var/lib/nudge/spool && chown 10001:10001 /var/lib/nudge/spool
VOLUME ["/var/lib/nudge/spool"]
USER 10001:10001
EXPOSE 50051
# The standard gRPC health service, asked on 127.0.0.1 at the port of NUDGE_LISTEN; it reports
# NOT_SERVING while Redis does not answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "nudge_server.healthcheck"]
# Exec form: `nudge` is PID 1 and gets the SIGTERM of `docker stop`, which drains the in-flight
# calls (NUDGE_SHUTDOWN_GRACE, 10 s) and flushes the decision log before exiting.
STOPSIGNAL SIGTERM
CMD ["nudge", "serve"]
