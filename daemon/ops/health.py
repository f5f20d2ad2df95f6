"""HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.errors import Fatal
from daemon.ops.metrics import Metrics

__all__ = ["HealthServer"]

log = logging.getLogger("skystream.health")


class HealthServer:
    """Serves metrics and health on one port with aiohttp.

    Parameters
    ----------
    metrics : Metrics
        Whose registry ``/metrics`` exposes.
    readiness : callable
        Returns ``(ready, reasons)``; ``/readyz`` answers 200 when ready, else 503 with the
        reasons.
    liveness : callable
        Returns ``(alive, reasons)``; ``/healthz`` answers 503 with the reasons when a task
        is stuck or supervision gave up (the liveness probe then restarts the process).
    warmed_up : callable
        True once the numerical kernels are compiled and the state restored; ``/startupz``
        answers 503 until then (the Kubernetes startup probe).
    host, port : str, int
        Listen address; port 0 picks a free port (see `port` after `start`).
    routes : iterable of aiohttp.web.RouteDef, optional
        More pages on the same port (e.g. ``web.get("/sky", handler)``); `add_routes`
        adds others before `start`.
    """

    def __init__(
        self,
        metrics: Metrics,
        readiness: Callable[[], tuple[bool, list[str]]],
        liveness: Callable[[], tuple[bool, list[str]]],
        warmed_up: Callable[[], bool],
        *,
        host: str,
        port: int,
        routes: Iterable[web.RouteDef] = (),
    ) -> None:
        self._routes: list[web.RouteDef] = list(routes)
        self._metrics = metrics
        self._readiness = readiness
        self._liveness = liveness
        self._warmed_up = warmed_up
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def add_routes(self, routes: Iterable[web.RouteDef]) -> None:
        """Serve more pages on this port; call before `start`."""
        if self._runner is not None:
            raise RuntimeError("routes must be added before the server starts")
        self._routes.extend(routes)

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        alive, reasons = self._liveness()
        return web.json_response(
            {"status": "ok" if alive else "stuck", "reasons": reasons},
            status=200 if alive else 503,
        )

    async def _startupz(self, _request: web.Request) -> web.Response:
        warm = self._warmed_up()
        return web.json_response({"warmed_up": warm}, status=200 if warm else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, reasons = self._readiness()
        return web.json_response(
            {"ready": ready, "reasons": reasons}, status=200 if ready else 503
        )

    async def start(self) -> None:
        """Start listening."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/startupz", self._startupz)
        app.router.add_routes(self._routes)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise Fatal(
                f"cannot serve metrics on {self._host}:{self._requested_port} ({exc.strerror}); "
                "set metrics.port to a free port"
            ) from None
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._requested_port
        log.info("metrics and health on http://%s:%s/metrics", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
