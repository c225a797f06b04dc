"""moto's standalone S3-compatible server (from PyPI) on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import httpx

from tests.integration.server import free_port

ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"


@dataclass
class S3Server:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self) -> str:
        import boto3

        name = "b" + uuid.uuid4().hex[:12]
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, *, redirect: bool = True) -> dict[str, str]:
        """TRUSTYARD_* variables that point a server at this bucket."""
        return {
            "TRUSTYARD_STORAGE_BACKEND": "s3",
            "TRUSTYARD_S3__BUCKET": bucket,
            "TRUSTYARD_S3__ENDPOINT_URL": self.endpoint,
            "TRUSTYARD_S3__ACCESS_KEY": ACCESS_KEY,
            "TRUSTYARD_S3__SECRET_KEY": SECRET_KEY,
            "TRUSTYARD_S3__REDIRECT": "true" if redirect else "false",
            "TRUSTYARD_S3__PART_SIZE": str(5 * 1024 * 1024),
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_s3() -> S3Server | None:
    exe = shutil.which("moto_server")
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    port = free_port()
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return S3Server(proc, port)
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start")
