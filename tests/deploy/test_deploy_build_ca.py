"""The extra CA bundle of the image build, shown necessary and sufficient where it matters.

On a network with a TLS-intercepting proxy (this machine's), pip inside the build reaches the
package index only with the proxy's CA, given as a file in deploy/build-ca/. The check builds
only the small ``tools`` stage (pip upgrades pip / setuptools / wheel from the index, with an
empty wheelhouse), once with the host's CA bundle and once without.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.docker_deploy import Docker, build_context, host_ca_bundle

INDEX = "https://pypi.org/simple/"


def _index_reachable(ca_bundle: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_bundle))
    try:
        with urllib.request.urlopen(f"{INDEX}pip/", timeout=20, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def _build_tools(docker: Docker, base_image: str, context: Path, tag: str) -> tuple[bool, str]:
    result = docker.run(
        "build",
        "--no-cache",
        "--force-rm",
        "--target",
        "tools",
        "--tag",
        tag,
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        f"PIP_INDEX_URL={INDEX}",
        str(context),
        check=False,
        timeout=600,
    )
    docker.run("rmi", "--force", tag, check=False)
    return result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture
def own_base(docker: Docker, base_image: str) -> Iterator[str]:
    """The base image under a child of its own (one LABEL layer), so that these ``--no-cache``
    builds hang under another parent than the image build's layers: the classic builder picks
    among equal cached children of one parent at random, and had taken these as cache for the
    image build, whose wheelhouse layer then missed and every dependency layer was rebuilt."""
    tag = "medgate-base:build-ca-test"
    docker.run(
        "build", "--tag", tag, "-", input=f"FROM {base_image}\nLABEL io.medgate.test=build-ca\n"
    )
    yield tag
    docker.run("rmi", tag, check=False)


def test_extra_ca_lets_pip_reach_the_index(docker: Docker, own_base: str, tmp_path: Path) -> None:
    ca_bundle = host_ca_bundle()
    if ca_bundle is None:
        pytest.skip("no host CA bundle found")
    if not _index_reachable(ca_bundle):
        pytest.skip(f"{INDEX} is not reachable from this machine")
    with_ca = build_context(tmp_path / "with-ca", None, ca_bundle)
    ok, log = _build_tools(docker, own_base, with_ca, "medgate-tools:with-ca")
    assert ok, log
    assert "extra CA certificates for the build: 1 file(s)" in log
    assert "Successfully installed" in log or "Requirement already satisfied" in log

    without_ca = build_context(tmp_path / "without-ca", None, None)
    ok, log = _build_tools(docker, own_base, without_ca, "medgate-tools:without-ca")
    if ok:
        pytest.skip("the index is reachable without the extra CA here (no TLS interception)")
    assert "CERTIFICATE_VERIFY_FAILED" in log or "SSL" in log, log
