"""MLflow tracking and registry as a Dagster resource.

Local profile: a SQLite backend in the home folder and a local artifact folder.
Production: the tracking server's URI (its backend is Postgres).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg


class MlflowResource(dg.ConfigurableResource):
    """Opens one MLflow run per Dagster step, tagged with the Dagster run id."""

    tracking_uri: str
    experiment_name: str = "tomosight"
    artifact_location: str | None = None  # only used when the experiment is created

    def configure(self):
        """Point the mlflow client at this resource's server and experiment; return the module."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if mlflow.get_experiment_by_name(self.experiment_name) is None:
            location = self.artifact_location
            if location and "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).resolve().as_uri()
            mlflow.create_experiment(self.experiment_name, artifact_location=location)
        mlflow.set_experiment(self.experiment_name)
        return mlflow

    @contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[object]:
        """Context manager around ``mlflow.start_run``; the run ends FAILED if the block raises."""
        mlflow = self.configure()
        with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
            yield run

    def client(self):
        """An ``MlflowClient`` bound to this tracking server."""
        from mlflow.tracking import MlflowClient

        self.configure()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
