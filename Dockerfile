# imnode in a container. Build: docker build -t imnode .
# Run:   docker run --network host -v imnode-data:/data imnode --domain example.org
# The build runs the same commands as the tests' set-up (npm ci), so what is
# tested is what ships. The single-binary build comes with a later issue.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src

FROM node:24-bookworm-slim
WORKDIR /app
COPY --from=build /app /app
RUN useradd --system --home /data imnode && mkdir -p /data && chown imnode /data
USER imnode
VOLUME /data
ENV IMNODE_DATA_DIR=/data
EXPOSE 5222 5223
ENTRYPOINT ["node", "/app/bin/imnode.ts"]
