# syntax=docker/dockerfile:1
# One image for every role; the pod's args pick it:
#   gamefleet operator   the GameFleet operator      (manifests/operator.yaml, the chart)
#   gamefleet serve      a game shard                (the operator's shard StatefulSet)
#   gamefleet route      the fleet service, a router (the operator's router Deployment)
# Build from the repository root, tagged with the version in pyproject.toml:
#   docker build -t ghcr.io/gamefleet/gamefleet:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: wheels of GameFleet and of every runtime dependency ---------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gameserver/ gameserver/
COPY operator/gamefleet_operator/ operator/gamefleet_operator/
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels ".[all]"

# --- runtime: the installed wheels and nothing of the build ---------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba
# The wheels are bind-mounted from the build stage, so no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels "gamefleet[all]" \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gamefleet
# Numeric, so Kubernetes' runAsNonRoot can verify it (the pods set runAsUser 10001 as well).
USER 10001:10001
WORKDIR /tmp
# gRPC (shards and routers), fleet metrics, operator liveness and metrics
EXPOSE 50051 9100 8080 9090
ENTRYPOINT ["gamefleet"]
CMD ["--help"]
