"""The cosign exemption decided on bytes: unit-level neighbours the integration test does not push
(duplicate JSON keys, lying descriptor sizes, missing blobs) and arbitrary manifests, which get a
reason and never an exception."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.signatures.test_policy_kinds import IMAGE, FakeRegistry, record, subject_of
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.registry.signature_artifacts import signature_artifact_problem
from trustyard.signing import cosign

SIGNER = cosign.KeySigner(ec.generate_private_key(ec.SECP256R1()))


def problem(reg: FakeRegistry, rec: ManifestRecord) -> str | None:
    return asyncio.run(signature_artifact_problem(reg.context(), rec))


def tag_artifact() -> tuple[FakeRegistry, dict[str, Any]]:
    reg = FakeRegistry()
    artifact = cosign.tag_artifact(SIGNER, "r.example/team/app", str(record(IMAGE).digest), None)
    reg.push(artifact)
    return reg, json.loads(artifact.manifest)


def test_real_artifacts_pass() -> None:
    reg, doc = tag_artifact()
    assert problem(reg, record(json.dumps(doc).encode())) is None
    for artifact in (
        cosign.referrer_artifact(SIGNER, "r.example/team/app", subject_of(record(IMAGE))),
        cosign.bundle_artifact(SIGNER, "r.example/team/app", subject_of(record(IMAGE))),
    ):
        reg = FakeRegistry()
        reg.push(artifact)
        assert problem(reg, record(artifact.manifest)) is None


def test_duplicate_keys_are_refused() -> None:
    """Clients may read another duplicate than we do; refuse the ambiguity."""
    reg, doc = tag_artifact()
    body = json.dumps(doc)
    twice = body[:-1] + ',"layers":' + json.dumps(doc["layers"]) + "}"
    why = problem(reg, record(twice.encode()))
    assert why is not None and "duplicate JSON keys" in why


def test_descriptor_sizes_and_blobs_must_match() -> None:
    reg, doc = tag_artifact()
    doc["layers"][0]["size"] -= 1  # the blob is bigger than the manifest says
    why = problem(reg, record(json.dumps(doc).encode()))
    assert why is not None and "layers[0]" in why
    reg, doc = tag_artifact()
    reg.blobs.clear()
    why = problem(reg, record(json.dumps(doc).encode()))
    assert why is not None and "missing" in why
    reg, doc = tag_artifact()
    doc["layers"][0]["size"] = True
    assert problem(reg, record(json.dumps(doc).encode())) is not None


def test_too_many_layers_and_the_media_type_of_the_record() -> None:
    reg, doc = tag_artifact()
    doc["layers"] = doc["layers"] * 65
    why = problem(reg, record(json.dumps(doc).encode()))
    assert why is not None and "1 to 64 layers" in why
    reg, doc = tag_artifact()
    content = json.dumps(doc).encode()
    digest = Digest("sha256", hashlib.sha256(content).hexdigest())
    as_index = ManifestRecord("team/app", digest, "application/vnd.oci.image.index.v1+json",
                              len(content), content)  # fmt: skip
    why = problem(reg, as_index)
    assert why is not None and "is not a signature manifest" in why


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": json_values,
        "mediaType": json_values,
        "artifactType": st.sampled_from([cosign.ARTIFACT_SIG, cosign.BUNDLE_V03]) | json_values,
        "config": json_values,
        "layers": st.lists(
            st.fixed_dictionaries(
                {"mediaType": st.sampled_from([cosign.SIMPLESIGNING, cosign.BUNDLE_V03])},
                optional={"digest": json_values, "size": json_values, "annotations": json_values},
            )
            | json_values,
            max_size=3,
        ),
    },
)


@settings(max_examples=200, deadline=None)
@given(manifest_like)
def test_arbitrary_manifests_get_a_reason_not_an_exception(doc: dict[str, Any]) -> None:
    assert problem(FakeRegistry(), record(json.dumps(doc).encode())) is not None
