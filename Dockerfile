# skystream container image: slim Python, non-root, the package installed from its wheel,
# the numerical kernels compiled at build time so that a new pod starts warm.
#   docker build -t skystream:0.1.0 .
#   docker run --rm -v "$PWD/data:/data" skystream:0.1.0 run --config /etc/skystream/config.yaml

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY processors processors
COPY daemon daemon
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ARG UID=10001
RUN groupadd --gid ${UID} skystream \
    && useradd --uid ${UID} --gid ${UID} --no-create-home --home-dir /tmp --shell /usr/sbin/nologin skystream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/default.yaml /etc/skystream/config.yaml
# Compiled kernels ship in the image. numba keys its cache on the CPU: "generic" code (no
# host-specific instructions) is loaded on any x86-64 node, so it is compiled here, once,
# into a read-only folder. numba only uses a folder it can write to, so at start the daemon
# copies the kernels into NUMBA_CACHE_DIR (under /tmp: an emptyDir in the chart, the
# writable fallback) before it first calls them (daemon/ops/kernel_cache.py); the startup
# then loads instead of compiling (README, "Kubernetes": measured cold starts).
ENV NUMBA_CPU_NAME=generic \
    SKYSTREAM_KERNEL_CACHE=/opt/skystream/numba-cache
RUN NUMBA_CACHE_DIR=${SKYSTREAM_KERNEL_CACHE} python -c "from processors import warm_up; warm_up()" \
    && chmod -R a+rX ${SKYSTREAM_KERNEL_CACHE}
# The root filesystem is read-only in the chart: numba's working cache, astropy's and every
# other cache go under /tmp (an emptyDir there).
ENV NUMBA_CACHE_DIR=/tmp/numba-cache \
    XDG_CACHE_HOME=/tmp/cache \
    XDG_CONFIG_HOME=/tmp/config \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER ${UID}:${UID}
WORKDIR /tmp
EXPOSE 9108
ENTRYPOINT ["skystream"]
CMD ["run", "--config", "/etc/skystream/config.yaml"]
