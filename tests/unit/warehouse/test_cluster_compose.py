"""docker-compose.cluster.yml and deploy/clickhouse-cluster/ (Docker is not run here): the YAML loads as
an override of docker-compose.yml, every mounted file exists and is well-formed XML, and the names the
files share agree (cluster name, Keeper address, replica hosts, macros)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "deploy" / "clickhouse-cluster"


def _compose(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def _xml(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def test_every_config_file_is_well_formed_xml() -> None:
    files = sorted(CONFIG_DIR.glob("*.xml"))
    assert {f.name for f in files} == {
        "cluster.xml",
        "keeper.xml",
        "macros-1.xml",
        "macros-2.xml",
        "users.xml",
    }
    for path in files:
        assert _xml(path).tag == "clickhouse", path.name


def test_override_names_services_of_the_base_file_or_new_ones() -> None:
    base, cluster = _compose("docker-compose.yml"), _compose("docker-compose.cluster.yml")
    new = set(cluster["services"]) - set(base["services"])
    assert new == {"keeper", "clickhouse-2"}
    for name in ("init", "worker", "api"):
        assert cluster["services"][name]["environment"]["OMNISEG_CLICKHOUSE_CLUSTER"] == "omniseg"
    for service in cluster["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source
            else:
                assert source in cluster["volumes"] or source in base["volumes"], source


def test_cluster_names_agree_across_the_files() -> None:
    cluster = _compose("docker-compose.cluster.yml")
    config = _xml(CONFIG_DIR / "cluster.xml")
    (name,) = [child.tag for child in config.find("remote_servers")]  # type: ignore[union-attr]
    assert name == cluster["services"]["init"]["environment"]["OMNISEG_CLICKHOUSE_CLUSTER"]
    shards = config.findall(f"remote_servers/{name}/shard")
    assert len(shards) == 1  # omniseg supports one shard of several replicas
    hosts = [replica.findtext("host") for replica in shards[0].findall("replica")]
    assert hosts == ["clickhouse", "clickhouse-2"]
    assert all(host in cluster["services"] or host == "clickhouse" for host in hosts)
    assert shards[0].findtext("internal_replication") == "true"
    keeper = _xml(CONFIG_DIR / "keeper.xml")
    assert config.findtext("zookeeper/node/host") == "keeper"
    assert config.findtext("zookeeper/node/port") == keeper.findtext("keeper_server/tcp_port")
    assert config.find("distributed_ddl/path") is not None
    macros = [_xml(CONFIG_DIR / f"macros-{n}.xml") for n in (1, 2)]
    assert {m.findtext("macros/shard") for m in macros} == {"01"}
    assert len({m.findtext("macros/replica") for m in macros}) == 2
