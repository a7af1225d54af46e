# imnode in a container: the single executable (dist/imnode) on a slim Debian.
#
#   docker build -t imnode .
#   docker run -d --network host -v imnode-data:/data imnode --autodiscover
#   docker run --rm -it --network host -v imnode-data:/data imnode user add alice
#   docker run -d --network host -v relay-data:/data imnode --relay-only --pool-password-file /data/pool-password
#
# --network host: mDNS (pool autodiscovery, DNS-SD for clients) is multicast and
# does not cross Docker's bridge network. Without it, publish the ports
# (-p 5222:5222 -p 5223:5223 -p 7400:7400) and give the pool --peer addresses.
#
# The build stage runs the same commands as the tests: `npm ci`, then
# `npm run build` (scripts/build.ts), which test/e2e/binary.test.ts also runs
# before starting the result under `env -i` in network namespaces. No Docker
# engine runs in this project's CI, so this file itself is not built there.

FROM node:24-bookworm-slim AS build
# strip(1), from binutils: the build strips node's debug symbols (~20 MB).
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY bin ./bin
COPY src ./src
COPY scripts ./scripts
RUN npm run build

FROM debian:bookworm-slim
# A fixed uid, so that a volume's owner is the same after an image upgrade.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/imnode --shell /usr/sbin/nologin imnode \
 && mkdir -p /data && chown imnode:imnode /data
COPY --from=build /src/dist/imnode /usr/local/bin/imnode
USER imnode
WORKDIR /data
# The LevelDB addon is unpacked under $HOME/.cache at first start; the data dir
# (database, certificate, pool key, admin socket) is the volume.
ENV HOME=/home/imnode \
    IMNODE_DATA_DIR=/data
VOLUME /data
# 5222 client STARTTLS (RFC 6120), 5223 client direct TLS (XEP-0368), 7400 pool
# (libp2p, TCP). With --autodiscover also 5353/udp (mDNS), host network only.
EXPOSE 5222 5223 7400
ENTRYPOINT ["/usr/local/bin/imnode"]
