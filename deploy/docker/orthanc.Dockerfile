# Orthanc from Debian's packages, for sites (and tests) without a container registry, configured
# like the orthancteam/orthanc image as far as deploy/compose.yaml uses it: every ORTHANC__KEY
# environment variable sets a key of Orthanc's configuration (ORTHANC__DICOM_AET -> "DicomAet",
# nesting with "__", values read as JSON where they parse), on top of defaults that listen on
# all interfaces (HTTP 8042, DICOM 4242) and store under /var/lib/orthanc/db.
#
#   docker build -f deploy/docker/orthanc.Dockerfile \
#     --build-arg BASE_IMAGE=medgate-base:bookworm -t medgate-orthanc deploy/docker
#   ORTHANC_IMAGE=medgate-orthanc docker compose -f deploy/compose.yaml up -d
#
# BASE_IMAGE is any Debian bookworm image with python3 whose apt reaches a Debian mirror.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN set -eu; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc python3; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    mkdir -p /var/lib/orthanc/db; \
    chown -R orthanc:orthanc /var/lib/orthanc

COPY orthanc-entrypoint.py /usr/local/bin/orthanc-entrypoint
VOLUME ["/var/lib/orthanc/db"]
EXPOSE 8042 4242
USER orthanc
ENTRYPOINT ["orthanc-entrypoint"]
