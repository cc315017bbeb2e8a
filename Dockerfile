# tunnelkit: one image for both sides.
#   docker build -t tunnelkit .
#   docker run -v $PWD/frps.toml:/etc/tunnelkit/frps.toml:ro -p 7000:7000 tunnelkit
#   docker run -v $PWD/frpc.toml:/etc/tunnelkit/frpc.toml:ro tunnelkit tunnelc -c /etc/tunnelkit/frpc.toml
# No config is baked in: the example configs carry placeholder tokens.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs (.dockerignore keeps the rest out of the context).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY protocol/ protocol/
COPY tunnel_common/ tunnel_common/
COPY tunnel_server/ tunnel_server/
COPY tunnel_client/ tunnel_client/
COPY tunnelkit/ tunnelkit/
RUN pip install . \
 && rm -rf /build

# An unprivileged user whose home holds the state dirs (server certificate, client id,
# known servers); it is a volume so the certificate fingerprint survives a new container.
RUN useradd --system --home-dir /var/lib/tunnelkit --create-home --shell /usr/sbin/nologin tunnelkit \
 && mkdir -p /etc/tunnelkit
ENV HOME=/var/lib/tunnelkit
WORKDIR /var/lib/tunnelkit
USER tunnelkit
VOLUME ["/var/lib/tunnelkit"]

# control, http vhost, https vhost, dashboard (as in frps.toml.example)
EXPOSE 7000 8080 8443 7500

# tunneld's dashboard answers GET /healthz without credentials (200 "ok" while it serves).
# TUNNELD_HEALTH_URL points elsewhere when webServer.port is not 7500; a tunnelc container
# has no dashboard: turn the check off for it (compose: healthcheck: disable: true).
ENV TUNNELD_HEALTH_URL=http://127.0.0.1:7500/healthz
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['TUNNELD_HEALTH_URL'], timeout=4)"]

CMD ["tunneld", "-c", "/etc/tunnelkit/frps.toml"]
