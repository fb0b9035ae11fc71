"""A small kustomize subset, enough to render `deploy/k8s` without kubectl.

Supported, and nothing else (anything else raises `Unsupported` instead of rendering wrongly):
- `resources`: YAML files (multi-document) and directories holding a `kustomization.yaml`;
- `namespace`: set on every namespaced object;
- `images`: `name` with `newName`, `newTag` and/or `digest`, applied to `containers` and
  `initContainers` images;
- `patches` with only `path`: strategic-merge patches whose target is found by kind and name.
  Maps merge recursively, `null` deletes a key, lists merge by the Kubernetes merge key for the
  lists in `MERGE_KEYS`, lists in `ATOMIC_LISTS` are replaced, any other list is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Unsupported", "render", "strategic_merge", "walk_pod_specs"]

Obj = dict[str, Any]

_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
_IMAGE_KEYS = {"name", "newName", "newTag", "digest"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}

# patchMergeKey of the Kubernetes types for the lists this renderer may merge.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
# Lists without a patch strategy (replaced whole by a strategic-merge patch).
ATOMIC_LISTS = {"args", "command", "items", "drop", "add", "except"}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


def render(directory: Path) -> list[Obj]:
    """Objects of the kustomization in `directory`, as `kubectl kustomize` would emit them."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = sorted(set(kustomization) - _KUSTOMIZATION_KEYS)
    if unknown:
        raise Unsupported(f"{directory}: kustomization keys {unknown}")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise Unsupported(f"{directory}: only kind Kustomization")
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            docs = yaml.safe_load_all(path.read_text(encoding="utf-8"))
            objects.extend(doc for doc in docs if doc is not None)
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise Unsupported(f"{directory}: patches support only `path`, got {sorted(entry)}")
        patch_docs = [
            d
            for d in yaml.safe_load_all((directory / entry["path"]).read_text(encoding="utf-8"))
            if d is not None
        ]
        for patch in patch_docs:
            index = _find_target(objects, patch, directory / entry["path"])
            objects[index] = strategic_merge(objects[index], patch)
    for image in kustomization.get("images", []):
        _apply_image(objects, image)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    ids = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{directory}: duplicate objects {duplicates}")
    return objects


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _find_target(objects: list[Obj], patch: Obj, source: Path) -> int:
    matches = [
        i
        for i, obj in enumerate(objects)
        if obj["kind"] == patch["kind"]
        and _group(obj["apiVersion"]) == _group(patch["apiVersion"])
        and obj["metadata"]["name"] == patch["metadata"]["name"]
    ]
    if len(matches) != 1:
        raise ValueError(
            f"{source}: patch for {patch['kind']}/{patch['metadata']['name']} "
            f"matches {len(matches)} objects"
        )
    return matches[0]


def strategic_merge(base: Obj, patch: Obj) -> Obj:
    """A new object: `patch` merged into `base` with strategic-merge-patch rules (subset)."""
    merged = copy.deepcopy(base)
    _merge_map(merged, patch, ())
    return merged


def _merge_map(target: Obj, patch: Obj, path: tuple[str, ...]) -> None:
    for key, value in patch.items():
        where = (*path, key)
        if key.startswith("$"):
            raise Unsupported(f"{'.'.join(where)}: patch directives are not implemented")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if isinstance(current, dict):
                _merge_map(current, value, where)
            else:
                target[key] = _without_nulls(value)
        elif isinstance(value, list):
            target[key] = _merge_list(target.get(key), value, key, where)
        else:
            target[key] = value


def _merge_list(current: Any, patch: list[Any], key: str, where: tuple[str, ...]) -> list[Any]:
    if key in ATOMIC_LISTS or current is None:
        return list(copy.deepcopy(patch))
    merge_key = MERGE_KEYS.get(key)
    if merge_key is None:
        raise Unsupported(f"{'.'.join(where)}: no strategic-merge rule for this list")
    result: list[Any] = copy.deepcopy(current)
    added = []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise Unsupported(f"{'.'.join(where)}: every item needs its merge key {merge_key!r}")
        for existing in result:
            if existing.get(merge_key) == item[merge_key]:
                _merge_map(existing, item, (*where, str(item[merge_key])))
                break
        else:
            added.append(_without_nulls(item))
    # Strategic merge puts items only the patch has before the merged original items.
    return added + result


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def walk_pod_specs(obj: Obj) -> Iterator[Obj]:
    """Pod specs inside a workload object (Deployment, Job, CronJob, ... or a Pod)."""
    if obj["kind"] == "Pod":
        yield obj["spec"]
        return
    spec = obj.get("spec", {})
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    if isinstance(template, dict) and "spec" in template:
        yield template["spec"]


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _apply_image(objects: list[Obj], image: Obj) -> None:
    unknown = sorted(set(image) - _IMAGE_KEYS)
    if unknown:
        raise Unsupported(f"images: keys {unknown}")
    for obj in objects:
        for pod in walk_pod_specs(obj):
            for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                name, tag, digest = _split_image(container["image"])
                if name != image["name"]:
                    continue
                name = image.get("newName", name)
                if "newTag" in image:
                    tag = str(image["newTag"])
                if "digest" in image:
                    digest, tag = image["digest"], None
                container["image"] = (
                    name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                )
