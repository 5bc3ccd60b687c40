"""Signing made real: cosign signs a locally built image with a key made on the spot,
verifies it, and refuses every tampered variant with its own error.

The images are tiny OCI archives written here (one file, a few hundred bytes); any
OCI image archive goes through the same path (``signing.sign_archive``). Everything
runs on 127.0.0.1: a ``crane registry serve`` started by the test, no network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qms_cluster import signing
from qms_cluster.registry import DIRECT

ROOT = Path(__file__).resolve().parents[2]
LOCAL_POLICY = "qms-local-images-signed"
pytestmark = pytest.mark.usefixtures("tools")


def log(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> signing.KeyPair:
    return signing.key_pair(tmp_path_factory.mktemp("key"), password="", log=log)


@pytest.fixture(scope="module")
def registry(tools: None) -> Iterator[signing.LocalRegistry]:
    with signing.LocalRegistry(log) as reg:
        yield reg


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def http(reg: signing.LocalRegistry, method: str, path: str, body: bytes = b"", **h: str) -> Any:
    req = urllib.request.Request(reg.url(path), data=body or None, method=method, headers=h)
    with DIRECT.open(req, timeout=10) as r:
        return r.read()


def forge_claim(reg: signing.LocalRegistry, repo: str, signed: str, target: str) -> None:
    """Re-point the signed payload of ``signed`` at ``target``, keeping the old signature.

    What an attacker without the private key can do: edit the claim and store it
    where cosign looks for ``target``'s signature.
    """
    accept = {"Accept": signing.OCI_MANIFEST}
    m = json.loads(http(reg, "GET", f"/v2/{repo}/manifests/{sig_tag(signed)}", **accept))
    (layer,) = m["layers"]
    payload = json.loads(http(reg, "GET", f"/v2/{repo}/blobs/{layer['digest']}"))
    assert payload["critical"]["image"]["docker-manifest-digest"] == signed
    payload["critical"]["image"]["docker-manifest-digest"] = target
    data = json.dumps(payload).encode()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    http(reg, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data)
    layer.update(digest=digest, size=len(data))  # the signature annotation stays
    body = json.dumps(m).encode()
    http(
        reg,
        "PUT",
        f"/v2/{repo}/manifests/{sig_tag(target)}",
        body,
        **{"Content-Type": signing.OCI_MANIFEST},
    )


def test_key_is_the_format_the_policies_name(key: signing.KeyPair) -> None:
    signing.check_public_key(key.public_key)  # PEM PUBLIC KEY, ECDSA P-256
    assert key.private_key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    pem = key.public_key.read_text().strip()
    # The placeholder policies become real ones with the key made here.
    cip = signing.policy_with_key(ROOT / "deploy/signing/cluster-image-policy.yaml", key.public_key)
    (local,) = [p for p in yaml.safe_load_all(cip) if p["metadata"]["name"] == LOCAL_POLICY]
    (authority,) = local["spec"]["authorities"]
    assert authority["key"]["data"].strip() == pem
    assert authority["key"]["hashAlgorithm"] == "sha256"
    assert "ctlog" not in authority  # no Rekor: signed with --tlog-upload=false
    assert "signatureFormat" not in authority  # classic .sig-tag format
    kyv = signing.policy_with_key(
        ROOT / "deploy/signing/kyverno-verify-images.yaml", key.public_key
    )
    (rule,) = [r for r in yaml.safe_load(kyv)["spec"]["rules"] if r["name"] == LOCAL_POLICY]
    (verify_images,) = rule["verifyImages"]
    assert verify_images["type"] == "Cosign"  # classic .sig-tag format
    (entry,) = verify_images["attestors"][0]["entries"]
    assert entry["keys"]["publicKeys"].strip() == pem
    assert entry["keys"]["signatureAlgorithm"] == "sha256"
    assert entry["keys"]["rekor"]["ignoreTlog"] is True


def test_sign_verify_and_tampered_images_fail(
    key: signing.KeyPair, registry: signing.LocalRegistry, tmp_path: Path
) -> None:
    repo, tag = "qms/tiny", f"{registry.host}/qms/tiny:1"
    good = signing.tiny_image(tmp_path / "good.tar", {"hello.txt": b"the real image\n"})
    evil = signing.tiny_image(tmp_path / "evil.tar", {"hello.txt": b"a tampered layer\n"})
    assert good != evil

    ref = signing.push(tmp_path / "good.tar", tag, log)
    assert ref == f"{registry.host}/{repo}@{good}"  # pushed byte for byte: same digest
    signing.sign(ref, key, log)
    for image in (ref, tag):
        (claim,) = signing.verify(image, key.public_key, log)
        assert claim["critical"]["image"]["docker-manifest-digest"] == good
        assert claim["critical"]["type"] == "cosign container image signature"

    # 1. A different image (one layer changed) pushed under the same tag.
    assert signing.push(tmp_path / "evil.tar", tag, log) == f"{registry.host}/{repo}@{evil}"
    with pytest.raises(signing.VerificationError) as e:
        signing.verify(tag, key.public_key, log)
    assert (e.value.returncode, e.value.message) == (10, "no signatures found")
    signing.verify(ref, key.public_key, log)  # the signed digest itself still verifies

    # 2. The good image's signature copied beside the tampered one.
    signing.copy(
        f"{registry.host}/{repo}:{sig_tag(good)}", f"{registry.host}/{repo}:{sig_tag(evil)}"
    )
    with pytest.raises(signing.VerificationError) as e:
        signing.verify(tag, key.public_key, log)
    assert e.value.returncode == 12
    assert e.value.message == f"no matching signatures: invalid or missing digest in claim: {good}"

    # 3. The claim edited to name the tampered digest, the old signature kept.
    forge_claim(registry, repo, good, evil)
    with pytest.raises(signing.VerificationError) as e:
        signing.verify(tag, key.public_key, log)
    assert e.value.returncode == 12
    assert e.value.message == (
        "no matching signatures: invalid signature when validating ASN.1 encoded signature"
    )

    # 4. Another key than the signer's.
    other = signing.key_pair(tmp_path / "other-key", password="", log=log)
    with pytest.raises(signing.VerificationError) as e:
        signing.verify(ref, other.public_key, log)
    assert e.value.message == (
        "no matching signatures: invalid signature when validating ASN.1 encoded signature"
    )

    # None of that touched the signed image: by digest it still verifies.
    (claim,) = signing.verify(ref, key.public_key, log)
    assert claim["critical"]["image"]["docker-manifest-digest"] == good


def _swap_image(layout: Path, files: dict[str, bytes]) -> str:
    """Put another image in a signed layout in place of the signed one; its digest."""
    desc = signing.write_image(layout, files)
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m["annotations"].get("kind") == signing.KIND_IMAGE:
            m.update(digest=desc["digest"], size=desc["size"])
    (layout / "index.json").write_text(json.dumps(index))
    return str(desc["digest"])


def test_signed_layout_verifies_offline_and_tampered_layouts_fail(
    key: signing.KeyPair, tmp_path: Path
) -> None:
    digest = signing.tiny_image(tmp_path / "image.tar", {"hello.txt": b"ship me\n"})
    signed = signing.sign_archive(
        tmp_path / "image.tar", key, tmp_path / "signed", "qms-io/qms-tiny", "0.1.0", log=log
    )
    assert signed.digest == digest
    assert signing.verify_layout(signed.layout, key.public_key, log) == digest

    # The image in the layout replaced by another one, the signature kept.
    swapped = tmp_path / "swapped"
    shutil.copytree(signed.layout, swapped)
    _swap_image(swapped, {"hello.txt": b"not what was signed\n"})
    with pytest.raises(signing.VerificationError) as e:
        signing.verify_layout(swapped, key.public_key, log)
    assert (
        e.value.message == f"no matching signatures: invalid or missing digest in claim: {digest}"
    )

    # A layer's bytes changed in place (its file keeps the old digest as its name):
    # the manifest, and so the signature, still match; the blob check catches it.
    edited = tmp_path / "edited"
    shutil.copytree(signed.layout, edited)
    manifest = json.loads((edited / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    layer = edited / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    with pytest.raises(signing.VerificationError) as e:
        signing.verify_layout(edited, key.public_key, log)
    assert e.value.message == f"blob {manifest['layers'][0]['digest']} does not match its digest"


def test_cli_sign_and_verify(key: signing.KeyPair, tmp_path: Path, capsys: Any) -> None:
    assert signing.main(["tiny-image", str(tmp_path / "x.tar"), "--text", "cli\n"]) == 0
    digest = capsys.readouterr().out.strip()
    key_dir = str(key.public_key.parent)
    argv = ["sign", str(tmp_path / "x.tar"), "--key-dir", key_dir, "--out", str(tmp_path / "out")]
    assert signing.main(argv) == 0
    assert capsys.readouterr().out.strip() == digest
    assert signing.main(["verify", str(tmp_path / "out"), "--key-dir", key_dir]) == 0
    assert capsys.readouterr().out.strip() == f"Verified OK: {digest}"
    other = signing.key_pair(tmp_path / "other", password="")
    assert signing.main(["verify", str(tmp_path / "out"), "--key", str(other.public_key)]) == 1
    assert "verification FAILED: no matching signatures: invalid signature when validating" in (
        capsys.readouterr().err
    )


def test_the_operator_image_built_here_is_signed_and_verified(
    key: signing.KeyPair, tmp_path: Path
) -> None:
    """The real operator image (`qms-cluster images`), not a test image, through the
    same path; its signed digest is the manifest digest of the archive it came from."""
    import os
    import subprocess

    from qms_cluster import images

    ref = images.OPERATOR.ref
    if shutil.which("buildah") is None or images.image_id(ref) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{ref} is not built (scripts/test.sh runs `qms-cluster images`)")
        pytest.skip(f"{ref} is not built here")
    archive = tmp_path / "operator.tar"
    subprocess.run(
        ["buildah", "push", "--quiet", ref, f"oci-archive:{archive}:dev"],
        check=True,
        capture_output=True,
    )
    signed = signing.sign_archive(
        archive, key, tmp_path / "signed", repository="qms-io/qms-operator", tag="dev", log=log
    )
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert signed.digest == index["manifests"][0]["digest"]
    assert signing.verify_layout(signed.layout, key.public_key, log) == signed.digest
