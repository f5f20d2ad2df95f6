# skystream container image: slim Python, non-root, the package installed from its wheel.
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
# The root filesystem is read-only in the chart: numba's compiled-kernel cache, astropy's
# and every other cache go under /tmp (an emptyDir there).
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
