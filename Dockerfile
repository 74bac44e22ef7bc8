# memrepl, built from this repository. Run it next to memcached, e.g.
#   docker run --network container:<memcached> memrepl --config /etc/memrepl/memrepl.yaml
# (see docker-compose.yml for a replicated pair).

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM node:20-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# Runtime dependencies only; the compiler and test tools stay in the build stage.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
USER node
# clients, replication, metrics
EXPOSE 11211 11212 9150
# Run as the file itself: its first line holds the node options memrepl runs with (see src/cli.ts).
ENTRYPOINT ["/app/dist/src/cli.js"]
