# node-cost-exporter image: a builder stage installs the locked runtime dependencies and the project wheel
# into /opt/venv; the final stage holds that venv on the same slim Python base and nothing else (no uv, no
# compiler, no sources, no pip cache).
#
#   docker build -t node-cost-exporter .                          # all three clouds (default)
#   docker build --build-arg EXTRAS=aws -t node-cost-exporter .   # slimmer: only the AWS SDK
#   docker build --build-arg EXTRAS= -t node-cost-exporter .      # no cloud SDK: offline/custom prices only
#
# EXTRAS is a comma-separated subset of aws,gcp,azure (the [project.optional-dependencies] of
# pyproject.toml). Enabling a cloud whose extra was left out stops the exporter at start (no module named
# boto3 / google.auth). Azure Retail Prices need no SDK (plain HTTPS): `azure` is needed only for the Cost
# Management billing integration (azure.cost_management).
#
# The Python base is pinned by digest: python:3.11-slim-bookworm moves with Debian and Python patch
# releases, and the digest makes two builds of one commit start from the same bytes. The tag stays for
# readers; the digest is what is pulled. The digest is the multi-arch index (amd64 and arm64 alike) that
# python:3.11-slim-bookworm, i.e. python:3.11.16-slim-bookworm, pointed to in September and October 2026,
# as recorded by several public repositories (Docker Hub itself could not be reached where this was written).
# Refresh it deliberately (security fixes in the base), not never, from the registry:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # "Digest: sha256:…" (the multi-arch index)
# and write it on both FROM lines (tests/test_deploy.py wants the same one on each). The uv image is still
# pinned by tag only (no digest of ghcr.io/astral-sh/uv:0.13.9 was found to check); to pin it too:
#   docker buildx imagetools inspect ghcr.io/astral-sh/uv:0.13.9
# then `COPY --from=ghcr.io/astral-sh/uv:0.13.9@sha256:<digest>`.

# ---- builder -------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS builder

# uv at the version the project pins (scripts/uv.py), copied from its official image: no pip install, no cache.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

# No cache to clean up, copies instead of hard links (the venv moves to another stage), this image's Python.
ENV UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_NO_CACHE_DIR=1

WORKDIR /src

# Dependencies first (their own layer, reused while only the code changes), from the lock file, with
# hashes. `--no-dev` is not enough on its own: `dev` is an *extra* of this project, so extras are passed one
# by one from EXTRAS, and only the three cloud extras are accepted.
ARG EXTRAS=aws,gcp,azure
COPY pyproject.toml uv.lock ./
RUN set -eu; \
    flags=""; \
    for extra in $(echo "$EXTRAS" | tr ',' ' '); do \
      case "$extra" in \
        aws|gcp|azure) flags="$flags --extra $extra" ;; \
        *) echo "EXTRAS: unknown extra '$extra' (use a comma-separated subset of aws,gcp,azure)" >&2; exit 1 ;; \
      esac; \
    done; \
    uv export --frozen --no-dev --no-emit-project --format requirements-txt $flags -o /tmp/requirements.txt; \
    uv venv /opt/venv --python /usr/local/bin/python3.11; \
    uv pip install --python /opt/venv/bin/python --require-hashes --no-build -r /tmp/requirements.txt

# The project itself, as a wheel (so package data such as the offline price table is included exactly as
# pyproject.toml declares it), installed without dependencies: they all came from the lock above.
# Bytecode is compiled here because the root filesystem is read-only at run time (and
# PYTHONDONTWRITEBYTECODE is set): otherwise every start would recompile every imported module in memory.
# unchecked-hash: valid whatever the file times become after COPY. kubernetes/aio (~68 MB of sources, never
# imported by the exporter) is left uncompiled to keep the image smaller.
COPY README.md ./
COPY exporter ./exporter
RUN set -eu; \
    uv build --wheel --out-dir /tmp/dist .; \
    uv pip install --python /opt/venv/bin/python --no-deps /tmp/dist/*.whl; \
    /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      -x '/kubernetes/aio/' /opt/venv/lib/python3.11/site-packages

# ---- final ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=https://github.com/OWNER/node-cost-exporter
LABEL org.opencontainers.image.title="node-cost-exporter" \
      org.opencontainers.image.description="Prometheus exporter of what each Kubernetes node costs, hour by hour" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# Read-only root filesystem: no .pyc writes, unbuffered logs, and any temporary file SQLite or a library
# might need goes to the cache directory (the only writable mount in the Kubernetes manifests).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/var/cache/node-cost-exporter \
    SQLITE_TMPDIR=/var/cache/node-cost-exporter

COPY --from=builder /opt/venv /opt/venv

# The cache directory exists and belongs to the runtime user, so `docker run` works without a mount; the
# VOLUME keeps it writable under `docker run --read-only`. In Kubernetes an emptyDir is mounted over it.
RUN install -d -o 65534 -g 65534 -m 0750 /var/cache/node-cost-exporter
VOLUME ["/var/cache/node-cost-exporter"]

# nobody:nogroup, numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65534:65534
EXPOSE 9798
ENTRYPOINT ["node-cost-exporter"]
