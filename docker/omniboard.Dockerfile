# Omniboard at the version pinned in the repository's package.json / package-lock.json.
FROM node:20-bookworm-slim
WORKDIR /opt/omniboard
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
EXPOSE 9000
ENTRYPOINT ["node", "node_modules/omniboard/dist/start.js"]
