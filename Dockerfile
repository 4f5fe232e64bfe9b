# zprune on a GPU host: Deno's WebGPU reaches the NVIDIA GPU through Vulkan. Run with
#   docker run --gpus all -p 8787:8787 zprune
# The NVIDIA container toolkit mounts the driver's Vulkan ICD only when the "graphics" capability is asked
# for (NVIDIA_DRIVER_CAPABILITIES below). Without a GPU the same image serves with the exact CPU backend.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Runtime dependencies only: Deno itself comes from the `deno` npm package.
RUN npm ci --omit=dev --no-audit --no-fund

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvulkan1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/zprune zprune
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    DENO_DIR=/home/zprune/.cache/deno \
    DENO_NO_UPDATE_CHECK=1 \
    PORT=8787 \
    HOST=0.0.0.0 \
    ZPRUNE_BACKEND=auto
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY deno.json package.json main.ts config.ts ./
COPY contract ./contract
COPY prune ./prune
COPY routes ./routes
COPY runtime ./runtime
COPY observe ./observe
COPY gpu ./gpu
COPY kernels ./kernels
USER zprune
# Compile once at build time, so the first request does not pay for it: the worker entry modules too, which no import
# names (the CPU backend starts its workers with the first large layer, the WebGPU one its worker at startup).
RUN ./node_modules/.bin/deno cache main.ts gpu/webgpu_backend.ts gpu/worker.ts prune/cpu_worker.ts
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["./node_modules/.bin/deno", "eval", "const r = await fetch(`http://127.0.0.1:${Deno.env.get('PORT')?.trim() || 8787}/healthz`); Deno.exit(r.ok ? 0 : 1)"]
STOPSIGNAL SIGTERM
CMD ["./node_modules/.bin/deno", "run", "--allow-net", "--allow-env", "--allow-read", "--allow-sys", "--v8-flags=--expose-gc", "main.ts"]
