# smartdns container: non-root, DNS on 5353 inside (publish as 53), metrics on 9353.
#   docker build -t smartdns .
#   docker run -p 53:5353/udp -p 53:5353/tcp -p 9353:9353 \
#     -v "$PWD/zones:/etc/smartdns/zones:ro" -v "$PWD/geodb:/etc/smartdns/geodb:ro" smartdns
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 5353 smartdns \
 && useradd --system --uid 5353 --gid smartdns --home-dir /nonexistent --shell /usr/sbin/nologin smartdns

WORKDIR /src
COPY pyproject.toml README.md ./
COPY smartdns ./smartdns
RUN pip install . && rm -rf /src

COPY --chown=root:root deploy/container/smartdns.yaml /etc/smartdns/smartdns.yaml
COPY --chown=root:root zones /etc/smartdns/zones
COPY --chown=root:root geodb /etc/smartdns/geodb

VOLUME ["/etc/smartdns/zones", "/etc/smartdns/geodb"]
EXPOSE 5353/udp 5353/tcp 9353
USER smartdns
WORKDIR /etc/smartdns

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9353/health', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["smartdns"]
CMD ["serve", "--config", "/etc/smartdns/smartdns.yaml"]
