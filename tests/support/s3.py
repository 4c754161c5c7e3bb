"""A real S3-compatible server on loopback for tests: moto's ThreadedMotoServer.

Use in a test module::

    from tests.support.s3 import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

    def test_x(s3_server: str, s3_bucket: str) -> None:
        store = ObjectStore(base_uri=f"s3://{s3_bucket}/p", endpoint_url=s3_server)

``s3_server`` (session scope) is the endpoint URL; while it runs the AWS
environment holds the dummy credentials "testing", region us-east-1, and no
profile or config file, so nothing can reach a real account. ``s3_bucket`` is a
fresh, empty bucket per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
UNSET_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@contextmanager
def aws_test_env() -> Iterator[None]:
    """Set dummy AWS credentials (and unset profiles/endpoints); restore on exit."""
    saved = {name: os.environ.get(name) for name in (*TEST_ENV, *UNSET_ENV)}
    os.environ.update(TEST_ENV)
    for name in UNSET_ENV:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto on 127.0.0.1 at a free port (chosen by the OS) and yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with aws_test_env():
            yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 S3 client for the test server."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name="us-east-1")


def create_bucket(endpoint_url: str, name: str | None = None) -> str:
    """Create a bucket (a unique name by default) on the test server and return its name."""
    bucket = name or f"test-{uuid.uuid4().hex[:16]}"
    s3_client(endpoint_url).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the test session."""
    with moto_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A new empty bucket on the session's moto server."""
    return create_bucket(s3_server)
