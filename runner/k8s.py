"""``loadproof k8s render``: a stage plan as k6-operator manifests, so that each stage runs on
N generator pods (k6-operator's ``parallelism``, which hands each runner an execution
segment) and every runner's raw output survives for ``loadproof import --shards``.

Per stage, one YAML file with a ConfigMap (the script, and for the shipped scripts their
library, flattened so that the ConfigMap's keys are plain file names) and a ``TestRun``
(``k6.io/v1alpha1``) whose runners write ``--out csv`` to a PersistentVolumeClaim mounted
with ``subPathExpr: <test run>/$(POD_NAME)``: one folder per runner pod. Every TestRun is
validated against the operator's CRD schema, shipped in ``runner/schemas`` with its source,
before anything is written."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .plan import Stage, StagePlan, format_duration
from .scripts import SCRIPTS_DIR, driven_wrapper, is_shipped, resolve_script
from .shards import check_generators

SCHEMA_PATH = Path(__file__).parent / "schemas" / "k6-operator-testrun.schema.json"
LIB_PATH = SCRIPTS_DIR / "lib" / "loadproof.js"
RESULTS_MOUNT = "/results"
SCRIPT_MOUNT = "/test"  # where k6-operator mounts the script's ConfigMap in each runner
DEFAULT_PVC = "loadproof-results"
DEFAULT_PREFIX = "loadproof"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIGMAP_MAX_BYTES = 1024 * 1024  # Kubernetes refuses larger ConfigMaps
# sub-metrics of the measured scenario (as execute.MAIN_THRESHOLDS), for user scripts
_MAIN_THRESHOLDS: dict[str, list[Any]] = {
    "http_req_duration{scenario:main}": [], "http_req_failed{scenario:main}": [],
    "http_reqs{scenario:main}": [], "dropped_iterations{scenario:main}": [],
}


class ManifestError(UsageError):
    """A rendered manifest does not validate (a bad name, a script too large for a
    ConfigMap, or a TestRun the operator's schema refuses)."""


@dataclass(frozen=True)
class K8sSettings:
    target: str
    plan: StagePlan
    generators: int = 1
    script: str = "quick"
    pvc: str = DEFAULT_PVC
    prefix: str = DEFAULT_PREFIX
    namespace: str | None = None


def _check_name(value: str, flag: str) -> str:
    if not _DNS_LABEL.match(value) or len(value) > 40:
        raise UsageError(f"{flag} {value!r}: use lowercase letters, digits and '-', starting "
                         "and ending with a letter or digit, at most 40 characters (a "
                         "Kubernetes name)")
    return value


def _script_files(settings: K8sSettings, stage: Stage) -> tuple[dict[str, str], str]:
    """The ConfigMap's files and the entry file k6 runs."""
    path = resolve_script(settings.script)
    if is_shipped(path):
        source = path.read_text().replace("'./lib/loadproof.js'", "'./loadproof.js'")
        return {path.name: source, "loadproof.js": LIB_PATH.read_text()}, path.name
    # a script of the user's: loadproof's stage replaces its load shape through the same
    # generated wrapper `run` uses, importing the script from the ConfigMap's folder
    wrapper = driven_wrapper(Path(SCRIPT_MOUNT) / path.name,
                             scenarios=stage.k6_scenarios(settings.generators),
                             tags={"stage": stage.key, "repeat": "1"},
                             thresholds=_MAIN_THRESHOLDS, functions=[])
    wrapper = wrapper.replace(json.dumps((Path(SCRIPT_MOUNT) / path.name).resolve().as_uri()),
                              json.dumps(f"./{path.name}"))
    return {path.name: path.read_text(), "loadproof-wrapper.js": wrapper}, \
        "loadproof-wrapper.js"


def _env(settings: K8sSettings, stage: Stage) -> list[dict[str, Any]]:
    values = {
        "LP_TARGET": settings.target, "LP_MODEL": stage.model, "LP_LEVEL": str(stage.level),
        "LP_DURATION": format_duration(stage.duration_s),
        "LP_WARMUP": format_duration(stage.warmup_s) if stage.warmup_s else "",
        "LP_STAGE": stage.key, "LP_REPEAT": "1", "LP_GENERATORS": str(settings.generators),
        "LP_SUMMARY_PATH": f"{RESULTS_MOUNT}/summary.json",
        "K6_CSV_TIME_FORMAT": "unix_micro", "K6_NO_USAGE_REPORT": "true",
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    # the runner pod's own name, for its folder on the results volume
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def stage_manifests(settings: K8sSettings, stage: Stage) -> list[dict[str, Any]]:
    """The ConfigMap and TestRun of one stage."""
    name = f"{settings.prefix}-{stage.key}"
    files, entry = _script_files(settings, stage)
    meta: dict[str, Any] = {"labels": {"app.kubernetes.io/managed-by": "loadproof",
                                       "loadproof.io/stage": stage.key}}
    if settings.namespace:
        meta["namespace"] = settings.namespace
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": name, **meta}, "data": files}
    arguments = f"--no-color --out csv={RESULTS_MOUNT}/raw.csv"
    if not is_shipped(resolve_script(settings.script)):
        arguments += f" --summary-export {RESULTS_MOUNT}/summary.json"
    env = _env(settings, stage)
    test_run = {
        "apiVersion": "k6.io/v1alpha1", "kind": "TestRun",
        "metadata": {"name": name, **meta},
        "spec": {
            "parallelism": settings.generators,
            "script": {"configMap": {"name": name, "file": entry}},
            "arguments": arguments,
            # the initializer evaluates the same options
            "initializer": {"env": [dict(item) for item in env]},
            "runner": {
                "env": env,
                "volumes": [{"name": "results",
                             "persistentVolumeClaim": {"claimName": settings.pvc}}],
                "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT,
                                  "subPathExpr": f"{name}/$(POD_NAME)"}],
            },
        },
    }
    return [config_map, test_run]


def shared_manifests(settings: K8sSettings) -> dict[str, list[dict[str, Any]]]:
    """The claim the runners write to, and a pod to copy the results out of it."""
    meta: dict[str, Any] = {"labels": {"app.kubernetes.io/managed-by": "loadproof"}}
    if settings.namespace:
        meta["namespace"] = settings.namespace
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": settings.pvc, **meta},
           # several runner pods, possibly on several nodes, write to it at once
           "spec": {"accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}}}}
    collect = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{settings.prefix}-collect", **meta},
               "spec": {"restartPolicy": "Never",
                        "containers": [{"name": "collect", "image": "busybox:1.36",
                                        "command": ["sleep", "3600"],
                                        "volumeMounts": [{"name": "results",
                                                          "mountPath": RESULTS_MOUNT}]}],
                        "volumes": [{"name": "results",
                                     "persistentVolumeClaim": {"claimName": settings.pvc}}]}}
    return {"pvc.yaml": [pvc], "collect-pod.yaml": [collect]}


class _Dumper(yaml.SafeDumper):
    """Scripts as literal blocks, readable in the ConfigMap; no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)


@cache
def testrun_schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return data


@cache
def _testrun_validator() -> Any:
    """One validator for every TestRun (checking the 230 KB schema itself each time cost
    seconds; tests check it once)."""
    import jsonschema

    return jsonschema.Draft7Validator(testrun_schema())


def validate(manifest: dict[str, Any]) -> None:
    """Refuse a manifest Kubernetes or k6-operator would refuse: TestRuns against the CRD's
    schema, ConfigMaps by their names, keys and size."""
    import jsonschema

    kind = manifest.get("kind")
    name = str((manifest.get("metadata") or {}).get("name") or "")
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise ManifestError(f"{kind} {name!r}: not a valid Kubernetes name")
    if kind == "TestRun":
        error = jsonschema.exceptions.best_match(_testrun_validator().iter_errors(manifest))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "(top)"
            raise ManifestError(f"TestRun {name}: {where}: {error.message} (k6-operator's "
                                f"schema, {SCHEMA_PATH.name})") from None
    elif kind == "ConfigMap":
        data = manifest.get("data") or {}
        for key in data:
            if not _CONFIGMAP_KEY.match(key):
                raise ManifestError(f"ConfigMap {name}: key {key!r} is not a valid file name")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        if size > CONFIGMAP_MAX_BYTES:
            raise ManifestError(f"ConfigMap {name}: the script is {size} bytes, over "
                                f"Kubernetes' {CONFIGMAP_MAX_BYTES}-byte limit; --script "
                                "a smaller (bundled) file")


def render(settings: K8sSettings, out_dir: Path) -> list[Path]:
    """Write one YAML file per stage (ConfigMap + TestRun), plus pvc.yaml and
    collect-pod.yaml; every manifest is validated before the first file is written."""
    _check_name(settings.prefix, "--name")
    _check_name(settings.pvc, "--pvc")
    if settings.namespace is not None:
        _check_name(settings.namespace, "--namespace")
    check_generators(settings.generators)
    documents: dict[str, list[dict[str, Any]]] = {}
    for stage in settings.plan.stages:
        documents[f"{stage.key}.yaml"] = stage_manifests(settings, stage)
    documents.update(shared_manifests(settings))
    for manifests in documents.values():
        for manifest in manifests:
            validate(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, manifests in documents.items():
        path = out_dir / file_name
        tmp = path.with_name(f".{file_name}.tmp")
        tmp.write_text(yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, width=100))
        tmp.replace(path)
        written.append(path)
    return written


def next_steps(settings: K8sSettings, written: list[Path]) -> str:
    """What to run after rendering: apply, wait, collect, import."""
    stages = [p for p in written if p.name not in ("pvc.yaml", "collect-pod.yaml")]
    ns = f" -n {settings.namespace}" if settings.namespace else ""
    lines = [f"kubectl apply{ns} -f {written[-2]}   # the results claim (skip if you have one)"]
    for path, stage in zip(stages, settings.plan.stages, strict=True):
        name = f"{settings.prefix}-{stage.key}"
        lines += [f"kubectl apply{ns} -f {path}",
                  f"kubectl wait{ns} --for=jsonpath='{{.status.stage}}'=finished "
                  f"testrun/{name} --timeout=30m"]
    lines += [f"kubectl apply{ns} -f {written[-1]}",
              f"kubectl cp{ns} {settings.prefix}-collect:{RESULTS_MOUNT} collected",
              "loadproof import --shards collected/*/*/raw.csv --label LABEL"]
    return "\n".join(lines)
