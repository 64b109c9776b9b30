"""The Kubernetes manifests (deploy/kubernetes), rendered with `kubectl kustomize` and
validated offline against the Kubernetes API schemas (kubernetes-validate, strict: an
unknown or misspelt field fails). No cluster here: what a cluster would do with them is
not run (deploy/README.md says so)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from forgeml.serve.settings import ServeSettings, settings_from_environment

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy/kubernetes"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def render(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its `kustomize` renders the manifests)")
    result = subprocess.run(["kubectl", "kustomize", str(KUBERNETES / overlay)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.parametrize("overlay", ["base", "with-postgres"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_manifest_is_valid_for_kubernetes(overlay, version):
    documents = render(overlay)
    assert len(documents) >= 8
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_a_misspelt_field_is_caught():  # the validation above can fail
    deployment = by_kind(render("base"), "Deployment")["forgeml-server"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_server_and_worker_run_hardened_with_probes_resources_and_secrets():
    documents = render("base")
    deployments = by_kind(documents, "Deployment")
    server = deployments["forgeml-server"]["spec"]["template"]["spec"]
    worker = deployments["forgeml-worker"]["spec"]["template"]["spec"]
    serve = server["containers"][0]
    assert serve["args"] == ["serve"] and worker["containers"][0]["args"] == ["jobs", "worker"]
    assert serve["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/health"
    for spec in (server, worker):
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            secrets = [e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]
                       if "valueFrom" in e]  # fmt: skip
            assert "forgeml-secrets" in secrets  # the database URL (and its password)
        for container in spec["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                  if "persistentVolumeClaim" in v]  # fmt: skip
        assert claims == ["forgeml-workspace"]
    assert "forgeml-workspace" in by_kind(documents, "PersistentVolumeClaim")


def test_egress_is_denied_by_default():
    policies = by_kind(render("base"), "NetworkPolicy")
    deny = policies["default-deny-egress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Egress"]
    assert not deny.get("egress")  # no rule: nothing goes out
    allowed = policies["forgeml-to-registry"]["spec"]["egress"]
    assert sorted(p["port"] for rule in allowed for p in rule["ports"]) == [53, 53, 5432]


def test_the_configured_settings_are_ones_the_server_accepts():
    config = by_kind(render("base"), "ConfigMap")["forgeml-config"]["data"]
    ServeSettings(**settings_from_environment(config))


def test_the_postgres_overlay_adds_a_statefulset_with_storage():
    documents = render("with-postgres")
    postgres = by_kind(documents, "StatefulSet")["forgeml-postgres"]
    assert postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert "forgeml-postgres" in by_kind(documents, "Service")
    assert "forgeml-server" in by_kind(documents, "Deployment")
