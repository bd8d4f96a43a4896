"""`featurestream apply` and `featurestream show`: the Feast repo as featurestream runs it."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from rich.table import Table

from featurestream.cli.common import console, fail, friendly_errors, settings
from featurestream.definitions import RepoSpecs, check_repo, load_repo


def feast_apply(repo_path: Path) -> str:
    """Feast's own apply, the code `feast apply` runs, so the registry is exactly Feast's.

    In this process rather than through the `feast` command: importing Feast costs
    seconds, and the definitions were just imported and checked here anyway.
    """
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    printed = io.StringIO()
    try:
        with contextlib.chdir(repo_path), contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            apply_total(load_repo_config(repo_path, repo_path / "feature_store.yaml"), repo_path,
                        skip_source_validation=False)
    except Exception as exc:  # Feast's own errors vary by store; all of them mean the apply did not happen
        raise fail(f"`feast apply` failed in {repo_path}: {type(exc).__name__}: {exc}\n{printed.getvalue()[-2000:]}")
    return printed.getvalue()


def specs_table(specs: RepoSpecs) -> Table:
    table = Table("view", "kind", "keys", "features", title=f"project {specs.project}")
    for view in specs.batch_views.values():
        ttl = f"ttl {view.ttl_ms // 1000}s" if view.ttl_ms else "no ttl"
        table.add_row(view.name, f"batch ({ttl})", ", ".join(view.join_keys), ", ".join(view.feature_names))
    for sview in specs.stream_views.values():
        kind = f"session (gap {sview.session_gap_ms // 1000}s)" if sview.is_session else "windowed"
        table.add_row(sview.name, f"{kind}, topic {sview.source.topic}", ", ".join(sview.join_keys),
                      ", ".join(sview.feature_names))
    for odfv in specs.on_demand_views.values():
        table.add_row(odfv.name, "on demand", "request: " + ", ".join(odfv.request_fields),
                      ", ".join(odfv.feature_names))
    for service in specs.feature_services.values():
        table.add_row(service.name, "feature service", "", f"{len(service.features)} features")
    return table


def apply_repo(repo_path: Path) -> RepoSpecs:
    check_repo(repo_path)
    feast_apply(repo_path)
    return load_repo(repo_path)


@friendly_errors
def apply() -> None:
    """Validate the definitions in the feature repo, then `feast apply` them."""
    specs = apply_repo(settings().repo_path)
    console.print(specs_table(specs))
    console.print("[green]applied[/]")


@friendly_errors
def show() -> None:
    """Show the applied definitions as featurestream runs them."""
    console.print(specs_table(load_repo(settings().repo_path)))
