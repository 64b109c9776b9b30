"""An S3-compatible server on loopback (moto's) for the shared artifact store's tests, and
the environment a "machine" of those tests runs forgeml with."""

from __future__ import annotations

import logging
import os

import pytest

BUCKET = "forgeml-shared"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    """The bucket, reached as the tests' own S3 client (to look inside and tamper)."""
    import s3fs

    fs = s3fs.S3FileSystem(key="test", secret="test", endpoint_url=s3_endpoint)
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    fs.invalidate_cache()
    return fs


def machine_env(s3_endpoint: str, postgres_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FORGEML_DATABASE_URL": postgres_url,
        "OMP_NUM_THREADS": "1",
    }
