#!/usr/bin/env python3
"""The Python half of deploy/validate.sh: Kubernetes schemas and the kit's consistency.

    checks.py --repo ROOT --k8s-built FILE --compose-resolved FILE --crd-dir DIR --kube-versions 1.30,1.37

- every YAML file of deploy/ parses, with no duplicate keys;
- Kubernetes: every object `kubectl kustomize deploy/k8s` produces (the Go half builds it), and
  every manifest file, validated strictly (unknown fields fail) against the Kubernetes JSON
  schemas of kubernetes-validate for each version given, and the Prometheus Operator's objects
  against the openAPIV3Schema of its CRDs (fetched by validate.sh), made strict the same way;
- the kit agrees with itself and with switchyard: config keys exist (src/config.rs's structs and
  config/default.toml), env overrides name real keys, ports, paths, probes, grace periods,
  partition counts, topic names, instance ids, selectors, the PrometheusRule's groups equal
  deploy/switchyard-alerts.yml's, the Dockerfile copies what exists and what the build-context
  filter lets through.

Prints one line per check; exits 1 if any failed.
"""

import argparse
import base64
import copy
import fnmatch
import json
import pathlib
import re
import shlex
import sys
import tomllib

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

FAILED = []


def check(name, problems):
    """Reports one named check: problems is a list of strings (empty = passed)."""
    problems = [p for p in problems if p]
    if problems:
        FAILED.append(name)
        print(f"FAIL {name}")
        for p in problems:
            print(f"       - {p}")
    else:
        print(f"ok   {name}")


# --- YAML with duplicate-key detection -----------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]


def load_yaml(path):
    docs = load_yaml_all(path)
    if len(docs) != 1:
        raise ValueError(f"{path}: expected one YAML document, found {len(docs)}")
    return docs[0]


# --- switchyard's configuration keys -------------------------------------------------------------


def config_schema(repo):
    """Known config keys: {dotted section: {key: kind}} with kind "section", "map" (free-form
    table: kafka.client, store.scylla.datacenters) or "value". From src/config.rs's serde structs
    (deny_unknown_fields: exactly the accepted keys) and config/default.toml (also its
    commented-out keys, `# key = value` inside a section)."""
    sections = {"": {}}
    src = (repo / "src/config.rs").read_text()
    structs = {}
    for m in re.finditer(r"\bstruct (\w+) \{\n(.*?)\n\}", src, re.S):
        fields = {}
        for line in m.group(2).splitlines():
            fm = re.match(r"\s*(?:pub(?:\([a-z]+\))?\s+)?([a-z_][a-z0-9_]*):\s*(.+?),?\s*$", line)
            if fm and not line.strip().startswith("//"):
                fields[fm.group(1)] = fm.group(2)
        structs[m.group(1)] = fields

    def walk(struct, prefix):
        for field, typ in structs.get(struct, {}).items():
            name = f"{prefix}.{field}" if prefix else field
            inner = re.sub(r"^Option<(.*)>$", r"\1", typ.strip())
            if inner in structs:
                sections.setdefault(prefix, {})[field] = "section"
                sections.setdefault(name, {})
                walk(inner, name)
            elif "Map<" in inner:
                sections.setdefault(prefix, {})[field] = "map"
            else:
                sections.setdefault(prefix, {})[field] = "value"

    walk("Config", "")
    from_rust = sum(len(v) for v in sections.values())

    text = (repo / "config/default.toml").read_text()

    def add_table(t, prefix):
        for k, v in t.items():
            if isinstance(v, dict) and not (prefix == "kafka" and k == "client"):
                sections.setdefault(prefix, {}).setdefault(k, "section")
                add_table(v, f"{prefix}.{k}" if prefix else k)
            else:
                sections.setdefault(prefix, {}).setdefault(k, "map" if isinstance(v, dict) else "value")

    add_table(tomllib.loads(text), "")
    section = ""
    for line in text.splitlines():
        h = re.match(r"^\[([a-z_.]+)\]", line)
        if h:
            section = h.group(1)
            continue
        c = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if c:
            sections.setdefault(section, {}).setdefault(c.group(1), "value")
    return sections, from_rust


def flatten(t, prefix=""):
    for k, v in t.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield name, v, True
            yield from flatten(v, name)
        else:
            yield name, v, False


def unknown_keys(schema, table, where):
    problems = []

    def walk(t, prefix):
        known = schema.get(prefix)
        for k, v in t.items():
            name = f"{prefix}.{k}" if prefix else k
            kind = (known or {}).get(k)
            if kind is None:
                problems.append(f"{where}: unknown config key `{name}`")
            elif kind == "section":
                if not isinstance(v, dict):
                    problems.append(f"{where}: `{name}` must be a table")
                else:
                    walk(v, name)
            elif kind == "value" and isinstance(v, dict):
                problems.append(f"{where}: `{name}` is a value, not a table")

    walk(table, "")
    return problems


def env_key(schema, var):
    """The config key a SWITCHYARD__A__B variable sets, or None when it names none (the same
    split as src/config.rs apply_env_override: `__` separates sections; under kafka.client the
    rest is a librdkafka property with `_` for `.`)."""
    parts = var[len("SWITCHYARD__"):].lower().split("__")
    if len(parts) >= 3 and parts[0] == "kafka" and parts[1] == "client":
        return "kafka.client." + "__".join(parts[2:]).replace("_", ".")
    *path, leaf = parts
    prefix = ".".join(path)
    if schema.get(prefix, {}).get(leaf):
        return f"{prefix}.{leaf}" if prefix else leaf
    return None


DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(v):
    if isinstance(v, int):
        return None
    parts = re.findall(r"(\d+)\s*(ms|s|m|h|d)", v)
    if not parts or re.sub(r"\s", "", "".join(n + u for n, u in parts)) != re.sub(r"\s", "", v):
        raise ValueError(f"{v!r} is not a duration such as \"30s\", \"5m\", \"1h30m\"")
    return sum(int(n) * DURATION_UNITS[u] for n, u in parts)


def key_ms(table, dotted, default_ms):
    """A duration key's value in ms (integers are in the key's own unit)."""
    t = table
    for p in dotted.split(".")[:-1]:
        t = t.get(p, {})
    v = t.get(dotted.split(".")[-1])
    if v is None:
        return default_ms
    unit = 1000 if dotted.endswith("_secs") else 1
    return v * unit if isinstance(v, int) else duration_ms(v)


def value_checks(table, where):
    problems = []
    for name, v, is_table in flatten(table):
        if is_table:
            continue
        if name.endswith(("_secs", "_ms")):
            try:
                ms = duration_ms(v)
                if ms is not None and name.endswith("_secs") and ms % 1000:
                    problems.append(f"{where}: `{name}` = {v!r} is not a whole number of seconds")
            except ValueError as e:
                problems.append(f"{where}: `{name}`: {e}")
    enums = {
        "head_end.mode": {"simulator", "kafka"},
        "store.backend": {"embedded", "scylla"},
        "store.scylla.replication": {"simple", "network_topology"},
        "store.scylla.consistency": {"one", "local_one", "quorum", "local_quorum", "each_quorum", "all"},
        "log.format": {"text", "json"},
    }
    flat = {n: v for n, v, t in flatten(table) if not t}
    for k, allowed in enums.items():
        if k in flat and flat[k] not in allowed:
            problems.append(f"{where}: `{k}` = {flat[k]!r}, expected one of {sorted(allowed)}")
    st = key_ms(table, "kafka.session_timeout_ms", 10_000)
    if not 1_000 <= st <= 1_800_000:
        problems.append(f"{where}: kafka.session_timeout_ms must be between 1s and 30m")
    if flat.get("store.backend") == "scylla":
        units = flat.get("store.scylla.ownership_units", 64)
        if not 1 <= units <= 4096:
            problems.append(f"{where}: store.scylla.ownership_units must be 1..4096")
    return problems


# --- Kubernetes schemas ---------------------------------------------------------------------------


def kube_errors(obj, version):
    """Every strict-schema error of one object for one Kubernetes version (kubernetes-validate's
    schemas and registry; all errors, not only the first). None when it has no schema there."""
    desired = version
    versions = [v for v in kv_utils.all_versions()
                if kv_utils.major_minor(v) <= kv_utils.major_minor(desired)]
    if not versions:
        raise SystemExit(f"kubernetes-validate has no schemas for {version}")
    v = versions[-1]
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    d = f"v{v}-local-strict"
    try:
        schema = kv_utils.schema_contents(f"kubernetes-json-schema/{d}/{obj['kind'].lower()}-{api}.json", desired)
    except FileNotFoundError:
        return None
    defs = kv_utils.schema_contents(f"kubernetes-json-schema/{d}/_definitions.json", desired)
    registry = referencing.Resource.from_contents(defs) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "generateName": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict_openapi(s):
    """An openAPIV3Schema (a CRD's) as a strict JSON schema: objects with properties and no
    additionalProperties / x-kubernetes-preserve-unknown-fields refuse other keys;
    int-or-string and nullable translated."""
    if isinstance(s, list):
        return [strict_openapi(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {k: strict_openapi(v) for k, v in s.items() if not k.startswith("x-kubernetes-")}
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schemas(crd_dir):
    """{(apiVersion, kind): JSON schema} from CustomResourceDefinition files."""
    schemas = {}
    for f in sorted(pathlib.Path(crd_dir).glob("*.yaml")):
        for crd in load_yaml_all(f):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                if not v.get("served"):
                    continue
                s = strict_openapi(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                s.setdefault("properties", {})
                s["properties"]["apiVersion"] = {"type": "string", "enum": [f"{group}/{v['name']}"]}
                s["properties"]["kind"] = {"type": "string", "enum": [kind]}
                s["properties"]["metadata"] = OBJECT_META
                s["required"] = sorted(set(s.get("required", [])) | {"apiVersion", "kind", "metadata"})
                s["additionalProperties"] = False
                schemas[(f"{group}/{v['name']}", kind)] = s
    return schemas


def validate_objects(objs, where, versions, crds):
    problems = []
    for obj in objs:
        name = f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in crds:
            v = jsonschema.Draft202012Validator(crds[key])
            problems += [f"{name}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                         for e in v.iter_errors(obj)]
            continue
        for ver in versions:
            errs = kube_errors(obj, ver)
            if errs is None:
                problems.append(f"{name}: no schema for {key[0]} {key[1]} in Kubernetes {ver} (nor a CRD given)")
                continue
            problems += [f"{name} (Kubernetes {ver}): {e}" for e in errs]
    return problems


# --- helpers on objects ---------------------------------------------------------------------------


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def listen_port(table):
    return int(table.get("http", {}).get("listen", "127.0.0.1:9464").rsplit(":", 1)[1])


def probe_of(container, kind):
    p = container.get(kind) or {}
    g = p.get("httpGet") or {}
    return g.get("path"), container_port(container, g.get("port"))


# --- the checks -----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True, type=pathlib.Path)
    ap.add_argument("--k8s-built", required=True, type=pathlib.Path)
    ap.add_argument("--compose-resolved", required=True, type=pathlib.Path)
    ap.add_argument("--crd-dir", required=True, type=pathlib.Path)
    ap.add_argument("--kube-versions", required=True)
    a = ap.parse_args()
    repo = a.repo.resolve()
    deploy = repo / "deploy"
    versions = a.kube_versions.split(",")
    # What the sections share, defined up front so that a section that failed early leaves the
    # others something to report against.
    yaml_files, manifest_files, built, crds, tomls = [], [], [], {}, {}
    schema, from_rust, copies = {"": {}}, 0, 0
    k8s_toml, compose_toml = {}, {}
    ignore_file = deploy / "Dockerfile.dockerignore"

    # YAML syntax.
    problems = []
    try:
        problems = []
        yaml_files = sorted(p for p in deploy.rglob("*.y*ml")
                            if ".tools" not in p.parts and "local" not in p.parts)
        for p in yaml_files:
            try:
                load_yaml_all(p)
            except Exception as e:  # noqa: BLE001 - report any parse error
                problems.append(f"{p.relative_to(repo)}: {e}")
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check(f"YAML: {len(yaml_files)} files of deploy/ parse, no duplicate keys", problems)

    # Config keys.
    problems = []
    try:
        schema, from_rust = config_schema(repo)
        problems = [] if from_rust else ["could not read the config structs of src/config.rs"]
        tomls = {}
        for rel in ["deploy/k8s/switchyard.toml", "deploy/compose/switchyard.toml", "deploy/image/switchyard.toml"]:
            try:
                tomls[rel] = tomllib.loads((repo / rel).read_text())
            except tomllib.TOMLDecodeError as e:
                problems.append(f"{rel}: {e}")
                continue
            problems += unknown_keys(schema, tomls[rel], rel)
            problems += value_checks(tomls[rel], rel)
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check(f"config: {len(tomls)} switchyard TOML files use only keys switchyard accepts "
          f"({from_rust} keys read from src/config.rs), valid durations and values", problems)
    k8s_toml = tomls.get("deploy/k8s/switchyard.toml", {})
    compose_toml = tomls.get("deploy/compose/switchyard.toml", {})

    # Kubernetes: schemas.
    problems = []
    try:
        crds = crd_schemas(a.crd_dir)
        built = load_yaml_all(a.k8s_built)
        problems = []
        if not crds:
            problems.append(f"no CRDs found in {a.crd_dir}")
        problems += validate_objects(built, "kustomize build", versions, crds)
        manifest_files = sorted(p for p in (deploy / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
        for p in manifest_files:
            problems += validate_objects(load_yaml_all(p), str(p.relative_to(repo)), versions, crds)
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check(f"Kubernetes schemas (strict, Kubernetes {', '.join(versions)}; "
          f"{len(crds)} Prometheus Operator CRD versions): {len(built)} built objects, "
          f"{len(manifest_files)} manifest files", problems)

    # Kubernetes: semantics of the built objects.
    problems = []
    try:
        by_kind = {}
        for o in built:
            by_kind.setdefault(o["kind"], []).append(o)
        problems = []
        for o in built:
            if o.get("metadata", {}).get("namespace"):
                problems.append(f"{o['kind']}/{o['metadata']['name']} sets a namespace (the kit is namespace-agnostic)")
        sts_list = by_kind.get("StatefulSet", [])
        if len(sts_list) != 1:
            problems.append(f"expected one StatefulSet, found {len(sts_list)}")
        else:
            sts = sts_list[0]
            spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
            pod_labels = sts["spec"]["template"]["metadata"].get("labels", {})
            if spec.get("replicas") != 3:
                problems.append(f"StatefulSet replicas {spec.get('replicas')}, expected 3")
            if spec.get("podManagementPolicy") != "Parallel":
                problems.append("StatefulSet podManagementPolicy is not Parallel")
            if not selects(spec["selector"].get("matchLabels"), pod_labels):
                problems.append("StatefulSet selector does not match its pod labels")
            headless = [s for s in by_kind.get("Service", []) if s["metadata"]["name"] == spec.get("serviceName")]
            if not headless or headless[0]["spec"].get("clusterIP") != "None":
                problems.append(f"serviceName {spec.get('serviceName')!r} is not a headless Service of the kit")
            elif not selects(headless[0]["spec"].get("selector"), pod_labels):
                problems.append("the headless Service does not select the StatefulSet's pods")
            containers = {c["name"]: c for c in pod["containers"]}
            inits = {c["name"]: c for c in pod.get("initContainers", [])}
            main_c = containers.get("switchyard")
            sc = pod.get("securityContext", {})
            if not sc.get("runAsNonRoot"):
                problems.append("pod securityContext.runAsNonRoot is not true")
            dockerfile_user = re.search(r"^USER (\d+):(\d+)", (deploy / "Dockerfile").read_text(), re.M)
            if dockerfile_user and sc.get("runAsUser") != int(dockerfile_user.group(1)):
                problems.append(f"runAsUser {sc.get('runAsUser')} differs from the Dockerfile's USER {dockerfile_user.group(1)}")
            if main_c is None:
                problems.append("no container named switchyard")
            else:
                env = {e["name"]: e for e in main_c.get("env", [])}
                iid = env.get("SWITCHYARD__KAFKA__INSTANCE_ID", {})
                if iid.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                    problems.append("SWITCHYARD__KAFKA__INSTANCE_ID does not come from fieldRef metadata.name")
                for c in [main_c, *inits.values()]:
                    for e in c.get("env", []):
                        if e["name"].startswith("SWITCHYARD__") and env_key(schema, e["name"]) is None:
                            problems.append(f"container {c['name']}: {e['name']} names no config key")
                port = listen_port(k8s_toml)
                for kind, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")]:
                    got = probe_of(main_c, kind)
                    if got != (path, port):
                        problems.append(f"{kind} is {got}, expected ({path!r}, {port}) (http.listen of the ConfigMap's TOML)")
                drain_ms = key_ms(k8s_toml, "head_end.shutdown_drain_secs", 30_000)
                need = drain_ms // 1000 + 30
                if pod.get("terminationGracePeriodSeconds", 30) < need:
                    problems.append(f"terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds', 30)} < "
                                    f"shutdown_drain_secs + 30 s = {need}")
                # --config path inside the ConfigMap mount, with the key switchyard.toml.
                volumes = {v["name"]: v for v in pod.get("volumes", [])}
                cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
                for c in [main_c, *inits.values()]:
                    args = c.get("args", [])
                    if "--config" not in args:
                        problems.append(f"container {c['name']}: no --config argument")
                        continue
                    cfg = pathlib.PurePosixPath(args[args.index("--config") + 1])
                    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == str(cfg.parent)]
                    vol = volumes.get(mounts[0]["name"]) if mounts else None
                    cm = cms.get((vol or {}).get("configMap", {}).get("name"))
                    if not cm or cfg.name not in cm.get("data", {}):
                        problems.append(f"container {c['name']}: {cfg} is not a key of a ConfigMap mounted at {cfg.parent}")
                    elif tomllib.loads(cm["data"][cfg.name]) != k8s_toml:
                        problems.append(f"ConfigMap {cm['metadata']['name']} differs from deploy/k8s/switchyard.toml")
                    data_dir = k8s_toml.get("data_dir")
                    if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                        if not any(m["mountPath"] == data_dir and not m.get("readOnly") for m in c.get("volumeMounts", [])):
                            problems.append(f"container {c['name']}: read-only root filesystem, and data_dir {data_dir} is not a writable mount")
                if args := inits.get("migrate", {}).get("args"):
                    if args[0] != "migrate":
                        problems.append("init container migrate does not run `switchyard migrate`")
                if k8s_toml.get("store", {}).get("scylla", {}).get("migrate_at_start", True) and "migrate" in inits:
                    problems.append("store.scylla.migrate_at_start is true although an init container migrates")
                images = {c["image"] for c in [main_c, *inits.values()]}
                if len(images) != 1:
                    problems.append(f"the containers run different images: {images}")
            for pdb in by_kind.get("PodDisruptionBudget", []):
                if pdb["spec"].get("maxUnavailable") != 1:
                    problems.append("PodDisruptionBudget maxUnavailable is not 1")
                if not selects(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
                    problems.append("PodDisruptionBudget does not select the StatefulSet's pods")
            if not by_kind.get("PodDisruptionBudget"):
                problems.append("no PodDisruptionBudget")
            for svc in by_kind.get("Service", []):
                if not selects(svc["spec"].get("selector"), pod_labels):
                    problems.append(f"Service {svc['metadata']['name']} does not select the pods")
                for p in svc["spec"].get("ports", []):
                    if main_c and container_port(main_c, p.get("targetPort", p["port"])) is None:
                        problems.append(f"Service {svc['metadata']['name']}: targetPort {p.get('targetPort')} is no container port")
            for sm in by_kind.get("ServiceMonitor", []):
                svcs = [s for s in by_kind.get("Service", [])
                        if selects(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
                if len(svcs) != 1:
                    problems.append(f"ServiceMonitor selects {len(svcs)} Services, expected 1")
                    continue
                names = {p.get("name") for p in svcs[0]["spec"]["ports"]}
                for ep in sm["spec"]["endpoints"]:
                    if ep.get("port") not in names:
                        problems.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is not a port of {svcs[0]['metadata']['name']}")
                job = svcs[0]["metadata"].get("labels", {}).get(sm["spec"].get("jobLabel", ""), svcs[0]["metadata"]["name"])
                if job != "switchyard":
                    problems.append(f"the scrape job would be {job!r}; the alert rules and dashboard use job=\"switchyard\"")
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check("Kubernetes semantics: StatefulSet (3, Parallel, instance id from the pod name, probes on "
          "http.listen, grace > drain, non-root, config mount), Services, PDB, ServiceMonitor agree", problems)

    # Alert rules: one source.
    problems = []
    try:
        problems = []
        alerts = load_yaml(deploy / "switchyard-alerts.yml")
        rules = [o for o in built if o["kind"] == "PrometheusRule"]
        if len(rules) != 1:
            problems.append(f"expected one PrometheusRule in the build, found {len(rules)}")
        elif rules[0]["spec"] != alerts:
            problems.append("PrometheusRule spec differs from deploy/switchyard-alerts.yml: run deploy/k8s/gen-prometheusrule.py")
        for prom in [deploy / "prometheus.yml", deploy / "compose/prometheus.yml"]:
            cfg = load_yaml(prom)
            if cfg.get("rule_files") != ["switchyard-alerts.yml"]:
                problems.append(f"{prom.relative_to(repo)}: rule_files should be [switchyard-alerts.yml]")
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check("alert rules: the PrometheusRule's groups equal deploy/switchyard-alerts.yml's; both Prometheus configs load that file", problems)

    # Compose.
    problems = []
    try:
        problems = []
        model = load_yaml(a.compose_resolved)
        services = model.get("services", {})
        dockerfile = (deploy / "Dockerfile").resolve()
        sy = {n: s for n, s in services.items()
              if s.get("build") and (pathlib.Path(s["build"]["context"]) / s["build"].get("dockerfile", "Dockerfile")).resolve() == dockerfile}
        instances = {n: s for n, s in sy.items() if (s.get("command") or ["run"])[0] == "run"}
        migrate = {n: s for n, s in sy.items() if (s.get("command") or [""])[0] == "migrate"}
        if len(instances) != 3:
            problems.append(f"expected 3 switchyard instances, found {sorted(instances)}")
        if len(migrate) != 1:
            problems.append(f"expected one `switchyard migrate` service, found {sorted(migrate)}")
        image_cfg = "/etc/switchyard/switchyard.toml"
        cmd_default = re.search(r'^CMD \["run", "--config", "([^"]+)"\]', (deploy / "Dockerfile").read_text(), re.M)
        if not cmd_default or cmd_default.group(1) != image_cfg:
            problems.append(f"the Dockerfile's CMD does not run with --config {image_cfg}")
        ids = {}
        for n, s in sy.items():
            cmd = s.get("command") or ["run", "--config", image_cfg]
            cfg = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
            mounted = {v["target"]: v["source"] for v in s.get("volumes", []) if v.get("type") == "bind"}
            if cfg not in mounted or pathlib.Path(mounted[cfg]).resolve() != (deploy / "compose/switchyard.toml").resolve():
                problems.append(f"{n}: --config {cfg} is not deploy/compose/switchyard.toml mounted")
            for var in (s.get("environment") or {}):
                if var.startswith("SWITCHYARD__") and env_key(schema, var) is None:
                    problems.append(f"{n}: {var} names no config key")
        for n, s in instances.items():
            env = s.get("environment") or {}
            iid = env.get("SWITCHYARD__KAFKA__INSTANCE_ID")
            if not iid or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", iid):
                problems.append(f"{n}: SWITCHYARD__KAFKA__INSTANCE_ID missing or invalid")
            elif iid in ids:
                problems.append(f"{n}: instance id {iid} also used by {ids[iid]}")
            ids[iid] = n
            deps = s.get("depends_on", {})
            for d in ["kafka-init", *migrate]:
                if deps.get(d, {}).get("condition") != "service_completed_successfully":
                    problems.append(f"{n}: does not wait for {d} to complete")
            grace = duration_ms(s.get("stop_grace_period", "10s"))
            need = key_ms(compose_toml, "head_end.shutdown_drain_secs", 30_000) + 30_000
            if grace < need:
                problems.append(f"{n}: stop_grace_period {s.get('stop_grace_period')} < shutdown_drain_secs + 30 s")
            hc = " ".join(s.get("healthcheck", {}).get("test", []))
            if f"/dev/tcp/127.0.0.1/{listen_port(compose_toml)}" not in hc or "/readyz" not in hc:
                problems.append(f"{n}: healthcheck does not ask /readyz on port {listen_port(compose_toml)}")
        if compose_toml.get("store", {}).get("scylla", {}).get("migrate_at_start", True) and migrate:
            problems.append("compose switchyard.toml: migrate_at_start is true although a migrate service runs")
        # Kafka, topics, partitions.
        kafka = services.get("kafka", {})
        kenv = kafka.get("environment") or {}
        init = services.get("kafka-init", {})
        ienv = init.get("environment") or {}
        script = (deploy / "compose/kafka-init.sh").read_text()
        partitions = {
            "kafka KAFKA_NUM_PARTITIONS": kenv.get("KAFKA_NUM_PARTITIONS"),
            "kafka-init PARTITIONS": ienv.get("PARTITIONS"),
            "kafka-init.sh default": (re.search(r'PARTITIONS="\$\{PARTITIONS:-(\d+)\}"', script) or [None, None])[1],
            "switchyard.toml kafka.embedded_partitions": compose_toml.get("kafka", {}).get("embedded_partitions"),
            "switchyard.toml store.scylla.ownership_units": compose_toml.get("store", {}).get("scylla", {}).get("ownership_units"),
        }
        if len({str(v) for v in partitions.values()}) != 1:
            problems.append(f"partition counts differ: {partitions}")
        if k8s_toml.get("kafka", {}).get("embedded_partitions") != k8s_toml.get("store", {}).get("scylla", {}).get("ownership_units"):
            problems.append("deploy/k8s/switchyard.toml: kafka.embedded_partitions and store.scylla.ownership_units differ")
        topics = tomllib.loads((repo / "config/default.toml").read_text())["topics"]
        arrays = {name: re.findall(r"^\s+([a-z0-9._-]+)$", body, re.M)
                  for name, body in re.findall(r"^(\w+)=\(\n(.*?)^\)", script, re.M | re.S)}
        want_compacted = {topics["registry"], topics["weather"], topics["emergencies"]}
        if set(arrays.get("COMPACTED_TOPICS", [])) != want_compacted:
            problems.append(f"kafka-init.sh COMPACTED_TOPICS {arrays.get('COMPACTED_TOPICS')} != {sorted(want_compacted)}")
        if set(arrays.get("TOPICS", [])) != set(topics.values()) - want_compacted:
            problems.append(f"kafka-init.sh TOPICS differ from config/default.toml [topics]: "
                            f"missing {sorted(set(topics.values()) - want_compacted - set(arrays.get('TOPICS', [])))}, "
                            f"extra {sorted(set(arrays.get('TOPICS', [])) - set(topics.values()))}")
        brokers = compose_toml.get("kafka", {}).get("brokers", "")
        if brokers not in kenv.get("KAFKA_ADVERTISED_LISTENERS", "") or brokers.split(":")[0] not in services:
            problems.append(f"kafka.brokers {brokers!r} is not the kafka service's advertised listener")
        if ienv.get("BOOTSTRAP") != brokers:
            problems.append(f"kafka-init BOOTSTRAP {ienv.get('BOOTSTRAP')!r} != kafka.brokers {brokers!r}")
        try:
            cid = kenv.get("CLUSTER_ID", "")
            if len(base64.urlsafe_b64decode(cid + "==")) != 16 or len(cid) != 22:
                raise ValueError
        except ValueError:
            problems.append(f"kafka CLUSTER_ID {kenv.get('CLUSTER_ID')!r} is not a base64url UUID (22 characters)")
        nodes = compose_toml.get("store", {}).get("scylla", {}).get("nodes", "")
        for node in nodes.split(","):
            if node.split(":")[0] not in services:
                problems.append(f"store.scylla.nodes {node!r} is not a compose service")
        # Prometheus and Grafana.
        prom = services.get("prometheus", {})
        pm = {v["target"]: pathlib.Path(v["source"]).resolve() for v in prom.get("volumes", []) if v.get("type") == "bind"}
        pcfg_path = next((a.split("=", 1)[1] for a in prom.get("command", []) if a.startswith("--config.file=")), None)
        if pcfg_path not in pm or pm[pcfg_path] != (deploy / "compose/prometheus.yml").resolve():
            problems.append("prometheus: --config.file is not deploy/compose/prometheus.yml mounted")
        else:
            pcfg = load_yaml(pm[pcfg_path])
            for rf in pcfg.get("rule_files", []):
                target = str(pathlib.PurePosixPath(pcfg_path).parent / rf)
                if pm.get(target) != (deploy / "switchyard-alerts.yml").resolve():
                    problems.append(f"prometheus: rule file {target} is not deploy/switchyard-alerts.yml mounted")
            jobs = {j["job_name"]: j for j in pcfg.get("scrape_configs", [])}
            targets = {t for sc in jobs.get("switchyard", {}).get("static_configs", []) for t in sc["targets"]}
            want = {f"{n}:{listen_port(compose_toml)}" for n in instances}
            if targets != want:
                problems.append(f"prometheus job switchyard scrapes {sorted(targets)}, expected {sorted(want)}")
        graf = services.get("grafana", {})
        gm = {v["target"]: pathlib.Path(v["source"]).resolve() for v in graf.get("volumes", []) if v.get("type") == "bind"}
        prov = gm.get("/etc/grafana/provisioning")
        if prov != (deploy / "compose/grafana/provisioning").resolve():
            problems.append("grafana: provisioning is not deploy/compose/grafana/provisioning mounted")
        else:
            ds = load_yaml(prov / "datasources/prometheus.yml")["datasources"]
            urls = [d["url"] for d in ds if d["type"] == "prometheus"]
            if urls != ["http://prometheus:9090"] or "prometheus" not in services:
                problems.append(f"grafana datasource urls {urls}, expected the prometheus service")
            providers = load_yaml(prov / "dashboards/switchyard.yml")["providers"]
            paths = {p["options"]["path"] for p in providers}
            dash_targets = [t for t, src in gm.items() if src == (deploy / "grafana/switchyard-dashboard.json").resolve()]
            if not dash_targets or str(pathlib.PurePosixPath(dash_targets[0]).parent) not in paths:
                problems.append(f"grafana: the dashboard is mounted at {dash_targets}, outside the provider paths {sorted(paths)}")
            home = (graf.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
            if home and home not in dash_targets:
                problems.append(f"grafana: home dashboard {home} is not the mounted dashboard")
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check("compose semantics: 3 instances with unique instance ids, migrate first, grace > drain, "
          "one partition count, topics = config/default.toml, Prometheus/Grafana wiring", problems)

    # Dockerfile and its build-context filter.
    problems = []
    try:
        problems = []
        text = (deploy / "Dockerfile").read_text()
        ignore_file = deploy / "Dockerfile.dockerignore"
        patterns = [l.strip() for l in ignore_file.read_text().splitlines() if l.strip() and not l.startswith("#")]

        def ignored(path):
            out = False
            for pat in patterns:
                neg = pat.startswith("!")
                pat = pat.lstrip("!").rstrip("/")
                if fnmatch.fnmatchcase(path, pat) or path.startswith(pat + "/"):
                    out = not neg
            return out

        copies = 0
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            words = shlex.split(line)
            if any(w.startswith("--from") for w in words):
                continue
            for src in [w for w in words[:-1] if not w.startswith("--")]:
                copies += 1
                if not (repo / src).exists():
                    problems.append(f"COPY {src}: not in the repository")
                if ignored(src.rstrip("/")):
                    problems.append(f"COPY {src}: excluded by {ignore_file.name}")
                for f in (repo / src).rglob("*") if (repo / src).is_dir() else []:
                    rel = str(f.relative_to(repo))
                    if f.is_file() and ignored(rel):
                        problems.append(f"COPY {src}: {rel} excluded by {ignore_file.name}")
                        break
        members = tomllib.loads((repo / "Cargo.toml").read_text()).get("workspace", {}).get("members", [])
        for m in members:
            if m != "." and f"COPY {m}/Cargo.toml" not in text:
                problems.append(f"workspace member {m} is not copied into the build stage")
        for b in tomllib.loads((repo / "Cargo.toml").read_text()).get("bench", []):
            if not (repo / "benches" / f"{b['name']}.rs").exists():
                problems.append(f"bench {b['name']}: benches/{b['name']}.rs missing")
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a traceback
        problems.append(f"the check itself failed: {type(e).__name__}: {e}")
    check(f"Dockerfile: {copies} COPY sources exist and pass {ignore_file.name}; workspace members and bench targets present", problems)

    if FAILED:
        print(f"\n{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
