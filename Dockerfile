# syntax=docker/dockerfile:1
# The oomtuner image: the operator (`oomtuner run`, the default), the node agent
# (`oomtuner agent`) and the web dashboard (`oomtuner dashboard`, the `dashboard` extra).
# Build it from the repository root:
#   docker build -t oomtuner:0.1.0 .
# Stage 1 makes a virtual environment in /opt/oomtuner from the lock files alone (every package
# pinned and checked against its hash, `make lock` writes them), builds the oomtuner wheel into it,
# and takes pip, setuptools and wheel out of it again. Stage 2 is the base image with that folder
# copied in, and pip (with ensurepip's copy) removed: no package manager, no compiler (the slim
# base has none), no pip cache. It runs as an unprivileged user with a read-only root filesystem in
# mind: no writes outside /tmp, no bytecode written at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build.lock requirements/runtime.lock requirements/
RUN python -m venv /opt/oomtuner \
    && /opt/oomtuner/bin/pip install --require-hashes --no-deps -r requirements/build.lock \
    && /opt/oomtuner/bin/pip install --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/oomtuner/bin/pip install --no-deps --no-build-isolation . \
    && /opt/oomtuner/bin/pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="oomtuner" \
      org.opencontainers.image.description="A Kubernetes operator that explains and fixes OOM kills." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/oomtuner/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && rm -rf /usr/local/lib/python3*/ensurepip /root/.cache \
    && groupadd --gid 65532 oomtuner \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin oomtuner
COPY --from=build /opt/oomtuner /opt/oomtuner
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081 8090 9102
ENTRYPOINT ["oomtuner"]
CMD ["run"]
