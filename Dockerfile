# medgate: the gateway as one container (`docker run` alone gives a working gateway).
#
#   docker build -t medgate .                                  # CPU image from the default base
#   docker build --build-arg BASE_IMAGE=registry.site/python:3.11-bookworm -t medgate .
#   docker build --build-arg VARIANT=cuda -t medgate:cuda .    # onnxruntime-gpu + CUDA torch
#   docker build --build-arg PIP_NO_INDEX=1 -t medgate .       # air-gapped: deploy/wheelhouse only
#   cp proxy-ca.pem deploy/build-ca/ && docker build -t medgate .   # TLS-intercepting proxy
#   docker run -p 11112:11112 -p 8000:8000 -e MEDGATE_AUDIT__HASH_KEY=$(openssl rand -hex 32) \
#     -e MEDGATE_API__TOKENS="{\"$(openssl rand -hex 32)\": [\"admin\"]}" medgate
#
# The image listens on all interfaces, so `medgate serve` refuses to start without an audit key
# of the site's own and without API tokens (token -> scopes: cds, results, admin); callers send
# `Authorization: Bearer <token>`. MEDGATE_API__ALLOW_ANONYMOUS=true serves the API open on
# purpose (a warning at every start). See docs/configuration.md, "Secure by default".
#
# BASE_IMAGE is any image with Python 3.11 and its venv module (python:3.11-slim-bookworm, or
# Debian bookworm with python3 + python3-venv); sites point it at their own registry. The build
# stages and the runtime stage all use it, so the virtual environment runs unchanged where built.
# Builds with the classic builder and with BuildKit alike (no BuildKit-only syntax).
# See docs/deploy.md for the wheelhouse, the extra CA bundle and the CUDA variant.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# tools: a virtual environment in /opt/medgate with current pip / setuptools / wheel, and pip's
# trust store with the extra CA certificates. A stage of its own so that the CA and index
# settings can be checked cheaply (`--target tools`).
FROM ${BASE_IMAGE} AS tools

# Where pip looks (the site's mirror, e.g. a Nexus/Artifactory/devpi proxy of PyPI).
ARG PIP_INDEX_URL=https://pypi.org/simple
# 1 = install from deploy/wheelhouse alone, no index at all (air-gapped sites).
ARG PIP_NO_INDEX=0

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PIP_INDEX_URL=${PIP_INDEX_URL} \
    PIP_FIND_LINKS=/build/wheelhouse \
    PYTHONDONTWRITEBYTECODE=1

# Extra CA certificates (PEM, *.pem or *.crt) for a TLS-intercepting proxy: they are trusted by
# pip in the build stages only. The runtime stage copies nothing from /build, so they never
# reach the final image.
COPY deploy/build-ca/ /build/ca/
RUN set -eu; \
    python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), \
        "BASE_IMAGE must provide Python 3.11, found " + sys.version' ; \
    bundle=/build/pip-ca.pem; : > "$bundle"; \
    for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do \
        if [ -f "$f" ]; then cat "$f" >> "$bundle"; break; fi; done; \
    extra=0; \
    for f in /build/ca/*.pem /build/ca/*.crt; do \
        if [ -f "$f" ]; then cat "$f" >> "$bundle"; echo >> "$bundle"; extra=$((extra + 1)); fi; \
    done; \
    echo "extra CA certificates for the build: $extra file(s)"; \
    python3 -m venv /opt/medgate
ENV PATH=/opt/medgate/bin:$PATH \
    PIP_CERT=/build/pip-ca.pem

# A local wheelhouse (deploy/scripts/make-wheelhouse.sh fills it): pip looks here first, and
# with PIP_NO_INDEX=1 only here.
COPY deploy/wheelhouse/ /build/wheelhouse/
RUN set -eu; \
    if [ "$PIP_NO_INDEX" = "1" ]; then export PIP_NO_INDEX=1; else unset PIP_NO_INDEX; fi; \
    python -m pip install --upgrade pip setuptools wheel

# ---------------------------------------------------------------------------------------------
# builder: torch and ONNX Runtime for the variant, then every dependency of pyproject.toml.
FROM tools AS builder

# cpu: the CPU torch wheel (from the wheelhouse or TORCH_INDEX_URL) and onnxruntime.
# cuda: PyPI's torch (CUDA build) and onnxruntime-gpu.
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# The CPU torch index, used only for VARIANT=cpu when the wheelhouse has no torch wheel.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_NO_INDEX=0

RUN set -eu; \
    if [ "$PIP_NO_INDEX" = "1" ]; then export PIP_NO_INDEX=1; else unset PIP_NO_INDEX; fi; \
    case "$VARIANT" in \
      cpu) \
        if ls /build/wheelhouse/torch-"$TORCH_VERSION"*.whl >/dev/null 2>&1 \
           || [ "$PIP_NO_INDEX" = "1" ]; then \
          python -m pip install "torch==$TORCH_VERSION"; \
        else \
          python -m pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; \
        fi; \
        python -m pip install onnxruntime ;; \
      cuda) \
        python -m pip install "torch==$TORCH_VERSION" onnxruntime-gpu; \
        python -c "import torch; assert torch.version.cuda, 'VARIANT=cuda got a CPU torch: \
take the +cpu torch wheel out of deploy/wheelhouse'" ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;; \
    esac

# The dependencies first (a layer that survives source and README edits), then medgate itself.
COPY pyproject.toml /build/src/
# torch and onnxruntime are already installed for the chosen variant.
RUN python -c "import re, tomllib; \
deps = tomllib.load(open('/build/src/pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps \
      if re.split(r'[<>=!~; \[]', d)[0].lower() not in ('torch', 'onnxruntime')))" \
    > /build/requirements.txt
RUN set -eu; \
    if [ "$PIP_NO_INDEX" = "1" ]; then export PIP_NO_INDEX=1; else unset PIP_NO_INDEX; fi; \
    if [ "$VARIANT" = "cuda" ]; then \
      python -m pip uninstall -y onnxruntime >/dev/null 2>&1 || true; fi; \
    python -m pip install -r /build/requirements.txt

# ---------------------------------------------------------------------------------------------
# wheel: medgate's own wheel, in a stage of its own so that a source edit leaves the (large)
# dependency layers of both stages cached.
FROM builder AS wheel
# README.md is the package's long description: needed for the wheel only.
COPY README.md /build/src/
COPY src/ /build/src/src/
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /build/dist /build/src

# ---------------------------------------------------------------------------------------------
# runtime: the same base, the virtual environment, medgate's wheel, the demo bundles; nothing
# else from /build (the extra CA and the wheelhouse stay in the builder).
FROM ${BASE_IMAGE} AS runtime

ARG VARIANT=cpu
LABEL org.opencontainers.image.title="medgate" \
      org.opencontainers.image.description="AI diagnosis gateway: DICOM in, AI findings on Ray Serve, DICOM SR/SEG and decision support out" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.medgate.variant="${VARIANT}"

# Noto Sans CJK for the Chinese text of result images: from deploy/fonts/ (air-gapped builds)
# or else Debian's fonts-noto-cjk from the base image's apt mirror.
COPY deploy/fonts/ /tmp/medgate-fonts/
RUN set -eu; \
    fonts=/usr/share/fonts/opentype/noto; mkdir -p "$fonts"; \
    for f in /tmp/medgate-fonts/*.ttc /tmp/medgate-fonts/*.otf; do \
        if [ -f "$f" ]; then cp "$f" "$fonts/"; fi; done; \
    rm -rf /tmp/medgate-fonts; \
    if [ ! -f "$fonts/NotoSansCJK-Regular.ttc" ]; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            fonts-noto-cjk; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    ls "$fonts"/NotoSansCJK-Regular.ttc

# A fixed, unprivileged user (uid 10001) that owns only the data folders.
RUN set -eu; \
    groupadd --gid 10001 medgate; \
    useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/medgate \
      --no-create-home --shell /usr/sbin/nologin medgate; \
    mkdir -p /var/lib/medgate /etc/medgate /opt/medgate-models; \
    chown -R 10001:10001 /var/lib/medgate

COPY --from=builder /opt/medgate /opt/medgate
COPY --from=wheel /build/dist/ /tmp/medgate-dist/
RUN set -eu; \
    /opt/medgate/bin/python -m pip install --no-index --no-deps --no-cache-dir \
      --disable-pip-version-check /tmp/medgate-dist/*.whl; \
    rm -rf /tmp/medgate-dist; \
    /opt/medgate/bin/python -m pip check --disable-pip-version-check \
      || echo 'pip check reported the conflicts above' >&2; \
    /opt/medgate/bin/medgate version
# `medgate-ray-head`: a Ray head node plus the gateway (compose, multi-node by hand).
COPY deploy/docker/ray-head.sh /usr/local/bin/medgate-ray-head
# `medgate-ray-worker`: a Ray worker node that waits for its head and joins it.
COPY deploy/docker/ray-worker.sh /usr/local/bin/medgate-ray-worker
# The demo bundles, so that the image alone is a working gateway; mount a volume over
# /opt/medgate-models for the site's own bundles.
COPY models/ /opt/medgate-models/

# Everything is configured by MEDGATE_<SECTION>__<KEY> (see docs/configuration.md) or a TOML
# file at MEDGATE_CONFIG; these defaults make the container listen on all interfaces (hence the
# audit key and API tokens that `docker run` must pass, see the top of this file).
ENV PATH=/opt/medgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/medgate \
    RAY_USAGE_STATS_ENABLED=0 \
    MEDGATE_DICOM__HOST=0.0.0.0 \
    MEDGATE_DICOM__PORT=11112 \
    MEDGATE_API__HOST=0.0.0.0 \
    MEDGATE_API__PORT=8000 \
    MEDGATE_STORAGE__PATH=/var/lib/medgate/storage \
    MEDGATE_MODELS__PATH=/opt/medgate-models

VOLUME ["/var/lib/medgate", "/opt/medgate-models", "/etc/medgate"]
EXPOSE 11112 8000
USER 10001:10001
WORKDIR /var/lib/medgate

# /healthz answers once the HTTP API is up; Ray's start takes a while, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('MEDGATE_API__PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["medgate"]
CMD ["serve"]
