"""deploy/helm/values.yaml for the official `dagster` chart, checked offline. No Kubernetes API server
and no `helm` run here, and the chart itself is not in this repository, so what is checked is:

Validated against Kubernetes' own JSON schemas (the `kubernetes-validate` package bundles them; its
newest strict set, where unknown fields are errors):
- deploy/helm/secrets.example.yaml: each Secret as a whole object;
- every value the chart passes to Kubernetes as a typed object: the user deployment's `env` items
  (EnvVar), `envSecrets` (SecretEnvSource), `podSecurityContext`, `securityContext`, `resources`;
  the run launcher's `envSecrets`, and each field of `runK8sConfig.podSpecConfig` (PodSpec's field)
  and `runK8sConfig.containerConfig` (Container's field).
Checked by these tests against the project itself:
- the user deployment serves `taxi_assets.definitions` (pyproject's [tool.dagster] module) with
  `dagsterApiGrpcArgs`; pods run as the image's uid (Containerfile's USER); K8sRunLauncher;
- the gcp variables the code reads (GCP_PROJECT, GCS_BUCKET, BQ_DATASET required; BQ_LOCATION,
  GCP_CREDENTIALS) are in the Secret that both the user deployment and the run launcher load;
  the PostgreSQL password is in the Secret the chart expects (global.postgresqlSecretName,
  key postgresql-password), and the chart's bundled PostgreSQL is off;
- run monitoring, run retries, the queue and pool settings equal deploy/dagster.yaml's.
Not checked, because nothing offline holds it: the chart's own values.schema.json and templates (the
chart is not on any package registry this project installs from, and not vendored here; `helm lint`
with the chart checks both where Helm and the chart's repository are reachable), keys the chart
ignores, and anything that needs a cluster (the image pulling, RBAC, the database reachable).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import referencing
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
HELM = ROOT / "deploy" / "helm"
GCP_REQUIRED = {"GCP_PROJECT", "GCS_BUCKET", "BQ_DATASET"}
GCP_OPTIONAL = {"BQ_LOCATION", "GCP_CREDENTIALS"}


def values() -> dict:
    return yaml.safe_load((HELM / "values.yaml").read_text())


def secrets() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((HELM / "secrets.example.yaml").read_text())}


def user_deployment() -> dict:
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    return deployment


def k8s_launcher() -> dict:
    return values()["runLauncher"]["config"]["k8sRunLauncher"]


@functools.cache
def kubernetes_definitions() -> tuple[str, dict]:
    """The newest Kubernetes version bundled with kubernetes-validate, and its strict definitions."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    versions = [m.group(1) for p in folder.iterdir() if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local-strict", p.name))]
    version = max(versions, key=lambda v: tuple(map(int, v.split("."))))
    return version, json.loads((folder / f"v{version}-local-strict" / "_definitions.json").read_text())


def registry() -> referencing.Registry:
    """Any `.../_definitions.json` (the chart's schema names them by URL, as `#/definitions/NAME`) is
    the bundled file (which keeps them under `$defs`)."""
    definitions = kubernetes_definitions()[1]
    contents = {**definitions, "definitions": definitions["$defs"]}

    def retrieve(uri: str) -> referencing.Resource:
        if uri.endswith("_definitions.json"):
            return referencing.Resource.from_contents(contents)
        raise referencing.exceptions.NoSuchResource(ref=uri)

    return referencing.Registry(retrieve=retrieve)


def k8s_schema(name: str) -> dict:
    return {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1.{name}"}


def field_schema(kind: str, field: str) -> dict:
    """The schema of one field of a Kubernetes type (its own `$ref`s resolve in the bundled file)."""
    return {"$ref": k8s_schema(kind)["$ref"] + f"/properties/{field}"}


def check(instance, schema: dict, where: str) -> None:
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    errors = list(validator(schema, registry=registry()).iter_errors(instance))
    assert not errors, f"{where}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_secrets_are_valid_kubernetes_objects():
    import kubernetes_validate

    version, _ = kubernetes_definitions()
    for name, doc in secrets().items():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
        assert doc["kind"] == "Secret", name


def test_the_kubernetes_typed_values_match_kubernetes_schemas():
    deployment = user_deployment()
    for i, env in enumerate(deployment["env"]):
        check(env, k8s_schema("EnvVar"), f"user deployment env[{i}]")
    for field, kind in [
        ("envSecrets", "SecretEnvSource"),
    ]:
        for i, item in enumerate(deployment[field]):
            check(item, k8s_schema(kind), f"user deployment {field}[{i}]")
    for field, kind in [
        ("podSecurityContext", "PodSecurityContext"),
        ("securityContext", "SecurityContext"),
        ("resources", "ResourceRequirements"),
    ]:
        check(deployment[field], k8s_schema(kind), f"user deployment {field}")

    launcher = k8s_launcher()
    for i, item in enumerate(launcher["envSecrets"]):
        check(item, k8s_schema("SecretEnvSource"), f"k8sRunLauncher envSecrets[{i}]")
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", v) for v in launcher["envVars"]), launcher["envVars"]
    definitions = kubernetes_definitions()[1]["$defs"]
    for part, kind in [("podSpecConfig", "PodSpec"), ("containerConfig", "Container")]:
        fields = definitions[f"io.k8s.api.core.v1.{kind}"]["properties"]
        for field, value in launcher["runK8sConfig"][part].items():
            assert field in fields, f"runK8sConfig.{part}.{field} is not a {kind} field"
            check(value, field_schema(kind, field), f"runK8sConfig.{part}.{field}")


def test_a_wrong_shape_is_caught():
    """The checks above do reject bad values (the bundled schemas are strict)."""
    with pytest.raises(AssertionError, match="runAsUser"):
        check({"runAsUser": "taxi"}, k8s_schema("PodSecurityContext"), "bad")
    with pytest.raises(AssertionError, match="runAsUsr"):
        check({"runAsUsr": 10001}, k8s_schema("PodSecurityContext"), "bad")
    with pytest.raises(AssertionError, match="cpu"):
        check({"requests": {"cpu": {"many": 2}}}, field_schema("Container", "resources"), "bad")


def test_the_user_deployment_serves_the_code_location_as_the_images_user():
    deployment = user_deployment()
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    user = re.search(r"^USER (\d+)", (ROOT / "Containerfile").read_text(), re.M).group(1)
    assert deployment["podSecurityContext"]["runAsUser"] == int(user) != 0
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert k8s_launcher()["runK8sConfig"]["podSpecConfig"]["securityContext"]["runAsUser"] == int(user)
    assert values()["runLauncher"]["type"] == "K8sRunLauncher"
    assert "dagster-k8s==" in (ROOT / "constraints.txt").read_text()  # run pods load the K8sRunLauncher


def test_the_gcp_settings_and_the_database_password_come_from_secrets():
    gcp = {e["name"]: e["value"] for e in user_deployment()["env"]}
    assert gcp == {"TAXI_TARGET": "gcp"}  # nothing else in plain values
    names = secrets()
    loaded = {s["name"] for s in user_deployment()["envSecrets"]}
    assert loaded == {s["name"] for s in k8s_launcher()["envSecrets"]} == {"taxi-assets-gcp"}
    keys = set(names["taxi-assets-gcp"]["stringData"])
    assert GCP_REQUIRED <= keys <= GCP_REQUIRED | GCP_OPTIONAL

    v = values()
    assert v["postgresql"]["enabled"] is False and v["postgresql"]["postgresqlHost"]
    assert v["generatePostgresqlPasswordSecret"] is False
    assert set(names[v["global"]["postgresqlSecretName"]]["stringData"]) == {"postgresql-password"}
    assert not v["postgresql"]["postgresqlPassword"]


def test_the_instance_settings_are_deploy_dagster_yaml_s():
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    daemon = values()["dagsterDaemon"]

    def camel(d: dict) -> dict:
        return {re.sub(r"_(\w)", lambda m: m.group(1).upper(), k): v for k, v in d.items()}

    assert daemon["runMonitoring"] == camel(instance["run_monitoring"])
    assert daemon["runRetries"] == camel(instance["run_retries"])
    assert daemon["runCoordinator"]["type"] == instance["run_coordinator"]["class"]
    assert daemon["runCoordinator"]["config"]["queuedRunCoordinator"] == camel(instance["run_coordinator"]["config"])
    concurrency = values()["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["pools"] == camel(instance["concurrency"]["pools"])
    assert concurrency["runs"] == camel(instance["concurrency"]["runs"])
    # The two pools the assets name; their limits are set in the run storage (values.yaml's header).
    header = (HELM / "values.yaml").read_text()
    assert "concurrency set warehouse 1" in header and "concurrency set upstream 2" in header
    assert values()["telemetry"] == {"enabled": False}
