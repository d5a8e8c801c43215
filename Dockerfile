# syntax=docker/dockerfile:1
# The oomtuner image: the operator (`oomtuner run`, the default), the node agent
# (`oomtuner agent`) and the web dashboard (`oomtuner dashboard`, the `dashboard` extra).
# Build it from the repository root:
#   docker build -t oomtuner:0.1.0 .
# Stage 1 builds the oomtuner wheel and the wheels of its dependencies; stage 2 installs them from
# there alone (no index, no compiler), and runs as an unprivileged user with a read-only root
# filesystem in mind: no writes outside /tmp, no bytecode written at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels ".[dashboard]"

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="oomtuner" \
      org.opencontainers.image.description="A Kubernetes operator that explains and fixes OOM kills." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "oomtuner[dashboard]==${VERSION}" \
    && groupadd --gid 65532 oomtuner \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin oomtuner
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081 8090 9102
ENTRYPOINT ["oomtuner"]
CMD ["run"]
