"""Offline checks of the shipped cluster configs: cluster.yaml, cluster-gcp.yaml, deploy/raycluster.yaml.

The launcher configs go through Ray's own `prepare_config` + `validate_config` (the steps `ray up` runs
before it talks to a cloud), with sockets blocked so a cloud call would fail the test. On top of the
schema, the fields `nst run` relies on are checked: a GPU-free head, GPU worker types whose declared GPU
count is their actor count, and every node installing this project at the pyproject version.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.10, whose stdlib has no tomllib
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER_CONFIGS = {"cluster.yaml": "s3", "cluster-gcp.yaml": "gcs"}  # file -> storage extra it needs
KUBERAY = ROOT / "deploy" / "raycluster.yaml"
RUNBOOK = ROOT / "docs" / "cluster.md"
IMAGE = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-(?P<py>py3\d+)(?P<gpu>-gpu)?$")


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails loudly: validation must be pure."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during config validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _prepared(name: str) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(_load(name)))
    validate_config(prepared)
    return prepared


def _pinned_requirements(commands: list[str]) -> list[Requirement]:
    """The `nst-pipeline` requirements that pip installs in these shell commands."""
    name = _pyproject()["name"]
    found = []
    for command in commands:
        words = shlex.split(command)
        if words[:2] != ["pip", "install"]:
            continue
        for word in words[2:]:
            if word.startswith("-"):
                continue
            requirement = Requirement(word)
            if requirement.name == name:
                found.append(requirement)
    return found


def _assert_pinned(requirement: Requirement, extra: str) -> None:
    project = _pyproject()
    assert requirement.extras == {extra}
    assert extra in project["optional-dependencies"]
    assert requirement.url is not None and requirement.url.startswith("git+https://github.com/")
    # `@vX.Y.Z` is a release tag: the same code on every node as on the driver.
    assert requirement.url.endswith(f"@v{project['version']}"), requirement.url


def _assert_image_matches_installed_ray(image: str, gpu: bool) -> re.Match[str]:
    match = IMAGE.match(image)
    assert match is not None, f"unpinned or unexpected image {image!r}"
    # Ray refuses clients and nodes from another minor release; the cluster follows the pinned venv.
    assert match["ray"].split(".")[:2] == ray.__version__.split(".")[:2]
    assert bool(match["gpu"]) == gpu, image
    return match


# --- Ray cluster launcher configs ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_passes_rays_own_validator(name: str, no_network: None) -> None:
    prepared = _prepared(name)
    assert prepared["provider"]["type"] == {"cluster.yaml": "aws", "cluster-gcp.yaml": "gcp"}[name]
    for key in ("max_workers", "idle_timeout_minutes", "upscaling_speed"):
        assert key in _load(name), f"{name} leaves {key} to Ray's defaults"


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c.update(max_worker=8), id="misspelled-top-level-key"),
        pytest.param(
            lambda c: c["available_node_types"]["head"]["resources"].update(GPU=0.5), id="fractional-gpu"
        ),
        pytest.param(
            lambda c: c["available_node_types"]["head"].pop("node_config"), id="node-type-without-node-config"
        ),
    ],
)
@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_validator_rejects_broken_copies(name: str, breakage: Any, no_network: None) -> None:
    config = _load(name)
    breakage(config)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_head_declares_no_gpu_so_no_actor_lands_there(name: str, no_network: None) -> None:
    prepared = _prepared(name)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert head["max_workers"] == 0
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--head" in start and "--num-gpus=0" in start
    assert "--dashboard-host=0.0.0.0" in start  # reachable through `ray dashboard` port-forwarding


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_gpu_worker_types_host_one_actor_per_gpu(name: str, no_network: None) -> None:
    prepared = _prepared(name)
    workers = {
        node_type: spec
        for node_type, spec in prepared["available_node_types"].items()
        if node_type != prepared["head_node_type"]
    }
    gpu_counts = sorted(spec["resources"]["GPU"] for spec in workers.values())
    assert gpu_counts[0] == 1 and gpu_counts[-1] > 1, "want a single-GPU and a multi-GPU node type"
    for node_type, spec in workers.items():
        resources = spec["resources"]
        # A GPU actor also takes 1 CPU unless it asks for num_cpus=0: k actors need k CPUs.
        assert resources["CPU"] >= resources["GPU"] >= 1, node_type
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= prepared["max_workers"], node_type
    assert prepared["max_workers"] == 8
    assert any(spec["min_workers"] >= 1 for spec in workers.values()), "a fresh cluster should see a GPU"
    assert prepared["idle_timeout_minutes"] > 0 and prepared["upscaling_speed"] > 0


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_every_node_installs_this_project_at_the_pyproject_version(name: str, no_network: None) -> None:
    prepared = _prepared(name)
    # prepare_config merges setup_commands into both lists: this is what each node really runs.
    for role in ("head_setup_commands", "worker_setup_commands"):
        pinned = _pinned_requirements(prepared[role])
        assert len(pinned) == 1, f"{name}: {role} installs nst-pipeline {len(pinned)} times"
        _assert_pinned(pinned[0], LAUNCHER_CONFIGS[name])


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_images_pin_the_installed_ray_and_one_python(name: str, no_network: None) -> None:
    docker = _prepared(name)["docker"]
    head = _assert_image_matches_installed_ray(docker["head_image"], gpu=False)
    worker = _assert_image_matches_installed_ray(docker["worker_image"], gpu=True)
    assert head["py"] == worker["py"], "driver and actors must run one Python version"
    minimum = re.search(r">=\s*3\.(\d+)", _pyproject()["requires-python"])
    assert minimum is not None and int(head["py"][3:]) >= int(minimum[1])


def test_aws_workers_carry_an_instance_profile_for_s3(no_network: None) -> None:
    prepared = _prepared("cluster.yaml")
    for node_type, spec in prepared["available_node_types"].items():
        profile = spec["node_config"].get("IamInstanceProfile", {})
        assert re.fullmatch(r"arn:aws:iam::[^:]+:instance-profile/[\w+=,.@-]+", profile.get("Arn", "")), (
            node_type
        )


def test_gcp_workers_carry_a_service_account_for_gcs(no_network: None) -> None:
    prepared = _prepared("cluster-gcp.yaml")
    for node_type, spec in prepared["available_node_types"].items():
        if node_type == prepared["head_node_type"]:
            continue  # `ray up` assigns its own service account to the head
        accounts = spec["node_config"]["serviceAccounts"]
        assert accounts and "https://www.googleapis.com/auth/cloud-platform" in accounts[0]["scopes"]
        assert spec["node_config"]["scheduling"] == [{"onHostMaintenance": "TERMINATE"}]


# --- KubeRay ------------------------------------------------------------------------------------


def _kuberay_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(KUBERAY.read_text()) if doc]


def _raycluster() -> dict[str, Any]:
    (cluster,) = [doc for doc in _kuberay_documents() if doc["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    return cluster


def _ray_container(template: dict[str, Any]) -> dict[str, Any]:
    (container,) = template["spec"]["containers"]
    return container


def test_kuberay_head_has_no_gpu() -> None:
    head = _raycluster()["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    container = _ray_container(head["template"])
    for bound in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"][bound]
    _assert_image_matches_installed_ray(container["image"], gpu=False)


def test_kuberay_gpu_workers_declare_what_they_get() -> None:
    spec = _raycluster()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        container = _ray_container(group["template"])
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus >= 1
        # Ray's GPU count must equal what Kubernetes hands the pod: one actor per GPU, none idle.
        assert int(group["rayStartParams"]["num-gpus"]) == gpus
        assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] <= 8
        _assert_image_matches_installed_ray(container["image"], gpu=True)


def test_kuberay_ray_version_matches_images_and_installed_ray() -> None:
    spec = _raycluster()["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    images = [IMAGE.match(_ray_container(t)["image"]) for t in templates]
    assert all(images)
    assert {m["ray"] for m in images if m} == {spec["rayVersion"]}
    assert len({m["py"] for m in images if m}) == 1
    assert spec["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2]


def test_kuberay_pods_install_the_pinned_project_before_ray_starts() -> None:
    cluster = _raycluster()
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    spec = cluster["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        container = _ray_container(template)
        env = {item["name"]: item["value"] for item in container["env"]}
        _assert_pinned(Requirement(env["NST_PIP_SPEC"]), "s3")
        (script,) = container["args"]
        assert container["command"] == ["/bin/bash", "-lc", "--"]
        assert script.index('"$NST_PIP_SPEC"') < script.index("$KUBERAY_GEN_RAY_START_CMD")


def test_kuberay_service_account_is_defined_alongside() -> None:
    accounts = {doc["metadata"]["name"] for doc in _kuberay_documents() if doc["kind"] == "ServiceAccount"}
    spec = _raycluster()["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        assert template["spec"]["serviceAccountName"] in accounts


@pytest.mark.parametrize("pip_exit, starts", [(0, True), (1, False)])
def test_kuberay_start_script_starts_ray_only_after_a_successful_install(
    tmp_path: Path, pip_exit: int, starts: bool
) -> None:
    """Runs the container's real args under bash with a stand-in pip and ray start."""
    (script,) = _ray_container(_raycluster()["spec"]["workerGroupSpecs"][0]["template"])["args"]
    for command, code in (("pip", pip_exit), ("ray", 0)):
        stand_in = tmp_path / command
        stand_in.write_text(f'#!/bin/sh\necho "{command} $*" >> "{tmp_path}/log"\nexit {code}\n')
        stand_in.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "NST_PIP_SPEC": "nst-pipeline[s3] @ git+https://example.invalid/x@v0",
        # The shape KubeRay generates: one line of words, expanded unquoted by the script.
        "KUBERAY_GEN_RAY_START_CMD": "ray start --address=nst-head-svc:6379 --num-gpus=1 --block",
    }
    result = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, timeout=10)
    log = (tmp_path / "log").read_text().splitlines()
    assert log[0] == "pip install --no-cache-dir nst-pipeline[s3] @ git+https://example.invalid/x@v0"
    started = "ray start --address=nst-head-svc:6379 --num-gpus=1 --block" in log
    assert started is starts, log
    assert (result.returncode == 0) is starts


# --- Placeholders and the runbook ---------------------------------------------------------------


def test_every_placeholder_is_explained_in_the_runbook() -> None:
    runbook = RUNBOOK.read_text()
    for path in [ROOT / name for name in LAUNCHER_CONFIGS] + [KUBERAY]:
        placeholders = set(re.findall(r"CHANGE_ME\w*", path.read_text()))
        assert placeholders, f"{path.name}: expected the CHANGE_ME markers the runbook describes"
        missing = {p for p in placeholders if p not in runbook}
        assert not missing, f"{path.name}: {sorted(missing)} not explained in docs/cluster.md"


def test_runbook_weights_file_is_torchvisions_vgg19() -> None:
    from torchvision.models import VGG19_Weights

    filename = VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    runbook = RUNBOOK.read_text()
    assert filename in runbook
    # torch.hub names files <name>-<first 8 hex of sha256>.pth; the runbook tells users to check it.
    prefix = re.fullmatch(r"vgg19-([0-9a-f]{8})\.pth", filename)
    assert prefix is not None and prefix[1] in runbook
