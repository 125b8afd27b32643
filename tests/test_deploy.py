"""The container, systemd and Kubernetes files: well formed and consistent with the code."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

from smartdns.cli import make_parser
from smartdns.config import load_config
from smartdns.zonefile import load_zone

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CONTAINER_CONFIG = DEPLOY / "container" / "smartdns.yaml"


def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return parser


def instructions(name: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == name]


def test_dockerfile_base_user_ports_and_healthcheck():
    parser = dockerfile()
    assert re.match(r"python:3\.1[1-9]-slim", parser.baseimage), parser.baseimage
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    exposed = " ".join(instructions("EXPOSE")).split()
    assert {"5353/udp", "5353/tcp", "9353"} <= set(exposed)
    (health,) = instructions("HEALTHCHECK")
    assert "http://127.0.0.1:9353/health" in health
    assert any("pip install ." in run for run in instructions("RUN"))
    volumes = " ".join(instructions("VOLUME"))
    assert "/etc/smartdns/zones" in volumes and "/etc/smartdns/geodb" in volumes


def test_dockerfile_command_is_a_real_cli_invocation():
    entry = json.loads(instructions("ENTRYPOINT")[0])
    cmd = json.loads(instructions("CMD")[0])
    assert entry == ["smartdns"]
    args = make_parser().parse_args(cmd)
    assert args.command == "serve" and args.config == "/etc/smartdns/smartdns.yaml"
    copies = {line.split()[-1]: line.split()[-2] for line in instructions("COPY")}
    assert copies["/etc/smartdns/smartdns.yaml"] == "deploy/container/smartdns.yaml"


def test_container_config_listens_inside_on_5353_and_metrics_on_9353():
    config = load_config(CONTAINER_CONFIG)
    assert [(a.host, a.port) for a in config.listen] == [("0.0.0.0", 5353)]
    assert config.metrics is not None and (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9353)


def test_systemd_unit():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive
    unit.read(DEPLOY / "systemd" / "smartdns.service")
    service = unit["Service"]
    assert service["DynamicUser"] == "yes"
    assert "CAP_NET_BIND_SERVICE" in service["AmbientCapabilities"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/smartdns")
    assert make_parser().parse_args(argv[1:]).command == "serve"
    for option in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies"):
        assert option in service
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def kubernetes() -> dict[str, dict]:
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_kubernetes_service_maps_53_to_5353_udp_and_tcp():
    service = kubernetes()["Service/smartdns"]
    ports = {(p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {("UDP", 53, 5353), ("TCP", 53, 5353)}


def test_kubernetes_deployment_probes_ports_and_scrape_annotations(tmp_path):
    docs = kubernetes()
    deployment = docs["Deployment/smartdns"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {"dns-udp": (5353, "UDP"), "dns-tcp": (5353, "TCP"), "metrics": (9353, "TCP")}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9353"
    assert make_parser().parse_args(container["args"]).config == "/etc/smartdns/smartdns.yaml"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # the config the pod reads: metrics on the pod address, zones where the ConfigMap is mounted
    config_file = tmp_path / "smartdns.yaml"
    config_file.write_text(docs["ConfigMap/smartdns-config"]["data"]["smartdns.yaml"])
    config = load_config(config_file)
    assert config.metrics.host == "0.0.0.0" and config.metrics.port == 9353
    assert [a.port for a in config.listen] == [5353]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(config.zones) == mounts["zones"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["spec"]["volumes"]}
    assert volumes["zones"] == "smartdns-zones"


def test_kubernetes_zones_configmap_holds_valid_zones(tmp_path):
    from smartdns.config import SoaSettings

    zones = kubernetes()["ConfigMap/smartdns-zones"]["data"]
    assert zones
    for name, text in zones.items():
        path = tmp_path / name
        path.write_text(text)
        zone = load_zone(path, SoaSettings())
        assert zone.origin.to_text() == name[: -len(".yaml")] + "."


def test_grafana_dashboard_uses_only_metrics_we_export():
    dashboard = json.loads((DEPLOY / "grafana" / "smartdns-dashboard.json").read_text())
    exported = set(re.findall(r'"(smartdns_[a-z_]+)"', (REPO / "smartdns" / "metrics.py").read_text()))
    # counters get _total, histograms _bucket/_sum/_count in the exposition
    names = exported | {n + "_total" for n in exported} | {n + s for n in exported for s in ("_bucket", "_sum", "_count")}
    used = {m for panel in dashboard["panels"] for t in panel["targets"] for m in re.findall(r"smartdns_[a-z_]+", t["expr"])}
    assert used and used <= names, used - names


def test_example_config_loads_and_uses_the_defaults():
    """smartdns.yaml documents every key; the values it shows are the defaults."""
    from smartdns.config import Config

    config = load_config(REPO / "smartdns.yaml")
    defaults = Config()
    for key in ("listen", "ecs", "soa", "health", "tcp", "workers", "metrics", "rrl", "server_id", "user"):
        assert getattr(config, key) == getattr(defaults, key), key
    text = (REPO / "smartdns.yaml").read_text()
    for key in ("listen", "zones", "geodb", "ecs", "soa", "health", "tcp", "workers", "user", "metrics",
                "server_id", "query_log", "rrl"):
        assert re.search(rf"^#? ?{key}:", text, re.M), key
