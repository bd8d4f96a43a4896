"""`featurestream serve`: the serving API on uvicorn (uvloop + httptools; hot routes answered by our protocol)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import typer

from featurestream.cli.common import console, fail, friendly_errors

APP = "serving.app:app_from_env"  # a factory: each worker builds its app from the environment


@friendly_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(6566, help="Port (6566 is Feast's feature server port)."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each loads the registry and models)."),
    model: list[str] = typer.Option([], help="<feature service>=<model.joblib or module:function>; repeatable."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Run the serving API: /get-online-features (Feast-compatible), /predict, /health, /metrics."""
    import uvicorn

    from serving.config import load_serve_config
    from serving.http_protocol import ServingHttpProtocol
    from serving.workers import run_workers

    if model:
        os.environ["FEATURESTREAM_MODELS"] = ",".join(filter(None, [os.environ.get("FEATURESTREAM_MODELS"), *model]))
    config = load_serve_config()  # fail here, once, on a bad setting rather than in every worker
    if not config.settings.repo_path.joinpath("feature_store.yaml").is_file():
        raise fail(f"{config.settings.repo_path} is not a Feast repo (set FEATURESTREAM_REPO)")
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="featurestream-metrics-")
    options: dict[str, Any] = {"factory": True, "host": host, "port": port, "workers": workers, "loop": "uvloop",
                               "http": ServingHttpProtocol, "log_level": log_level, "access_log": False}
    console.print(f"serving {config.settings.repo_path} on http://{host}:{port} with {workers} worker(s)")
    if workers == 1:
        uvicorn.run(APP, **options)
        return
    try:
        run_workers(uvicorn.Config(APP, **options))
    except ValueError as exc:
        raise fail(f"--workers {workers}: {exc}") from None
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
