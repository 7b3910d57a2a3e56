# PostgreSQL from Debian's packages, for sites (and tests) without a container registry: the
# same environment contract as the official postgres image, as far as deploy/compose.yaml uses
# it (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA, pg_isready on PATH).
#
#   docker build -f deploy/docker/postgres.Dockerfile \
#     --build-arg BASE_IMAGE=medgate-base:bookworm -t medgate-postgres deploy/docker
#   POSTGRES_IMAGE=medgate-postgres docker compose -f deploy/compose.yaml up -d
#
# BASE_IMAGE is any Debian bookworm image whose apt reaches a Debian mirror (the site's own
# mirror: put it in the base image's /etc/apt/sources.list).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# No "main" cluster at install time: the entrypoint initialises PGDATA on first start.
RUN set -eu; \
    mkdir -p /etc/postgresql-common; \
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    ln -s "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)" /opt/pgbin; \
    mkdir -p /var/lib/postgresql/data /run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /run/postgresql; \
    chmod 700 /var/lib/postgresql/data

COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/opt/pgbin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
USER postgres
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint"]
