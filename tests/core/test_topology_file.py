"""Topology files: the shipped sample, and errors that name the file, the key and what was expected."""

import textwrap

import pytest

from hpcrt import Device, TopologyFileError
from hpcrt.topology.yaml_file import load_topology_file, resolve_topology_path

CPU = Device("cpu", None, "test cpu", 1 << 30)


def load(path, size=4):
    return load_topology_file(path, size, [CPU] * size, ["host"] * size)


def test_sample_is_two_nodes_with_different_nics():
    topo = load("two_nodes_mixed_nic")
    assert topo.nodes == ["node-ib", "node-roce"]
    assert [r.local_rank for r in topo.ranks] == [0, 1, 0, 1]
    assert [r.nic_class for r in topo.ranks] == ["ib", "ib", "roce", "roce"]
    assert [topo.link_class(0, 1), topo.link_class(2, 3), topo.link_class(1, 2)] == ["intra", "intra", "eth"]
    assert topo.link_cost(1, 2).beta == pytest.approx(1 / 1.25e9)
    assert topo.link_cost(0, 1).alpha == pytest.approx(0.5e-6)
    assert topo.ranks[0].device == CPU


def write(tmp_path, text):
    path = tmp_path / "topo.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD_LINKS = """
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 10}
  ib: {alpha_us: 2, bandwidth_gbytes_s: 5}
  eth: {alpha_us: 20, bandwidth_gbytes_s: 1}
"""


def test_interleaved_ranks_and_slower_class_between_mixed_nodes(tmp_path):
    path = write(tmp_path, textwrap.dedent("""
        nodes:
          - {name: a, ranks: [0, 2], nic: {class: ib}}
          - {name: b, ranks: [1, 3], nic: {class: eth}}
        """) + GOOD_LINKS)
    topo = load(path)
    assert [r.node for r in topo.ranks] == ["a", "b", "a", "b"]
    assert [r.local_rank for r in topo.ranks] == [0, 0, 1, 1]
    assert topo.link_class(0, 2) == "intra" and topo.link_class(0, 1) == "eth"


@pytest.mark.parametrize("body, key, expected", [
    ("nodes: [{name: a, ranks: 4, speed: 3}]" + GOOD_LINKS, "nodes[0].speed", "unknown"),
    ("nodes: [{name: a, ranks: 3}]" + GOOD_LINKS, "nodes", "cover exactly ranks 0..3"),
    ("nodes: [{name: a, ranks: 5}]" + GOOD_LINKS, "nodes", "cover exactly ranks 0..3"),
    ("nodes: [{name: a, ranks: 4, nic: {class: roce}}]" + GOOD_LINKS, "links.roce", "link costs for NIC class"),
    ("nodes: [{name: a, ranks: 4, nic: {class: myri}}]" + GOOD_LINKS, "nodes[0].nic.class", "one of ib, roce"),
    ("nodes: [{name: a, ranks: 4}]\nlinks: {ib: {alpha_us: 1, bandwidth_gbytes_s: 1}}", "links.intra",
     "inside a node"),
    ("nodes: [{name: a, ranks: 4}]\nlinks: {intra: {alpha_us: -1, bandwidth_gbytes_s: 1}}", "links.intra.alpha_us",
     "positive finite"),
    ("nodes: [{name: a, ranks: [0, 1]}, {name: b, ranks: [1, 2, 3]}]" + GOOD_LINKS, "nodes[1].ranks",
     "not already placed"),
    ("nodes: [{name: a, ranks: 2}, {name: a, ranks: 2}]" + GOOD_LINKS, "nodes[1].name", "no other node has"),
    ("nodes: [{name: a, ranks: 4}]" + GOOD_LINKS + "mixed: roce\n", "mixed", "link class defined"),
    ("nodes: [{name: a, ranks: 4}]" + GOOD_LINKS + "emulate: sometimes\n", "emulate", "true or false"),
    ("topology: {}\n", "topology", "unknown"),
])
def test_invalid_files_name_file_key_and_expectation(tmp_path, body, key, expected):
    path = write(tmp_path, body)
    with pytest.raises(TopologyFileError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and f"key '{key}'" in message and expected in message, message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(TopologyFileError, match="cannot be read"):
        load(tmp_path / "missing.yaml")
    with pytest.raises(TopologyFileError, match="not valid YAML"):
        load(write(tmp_path, "nodes: [unclosed"))


def test_shipped_names_resolve(tmp_path):
    assert resolve_topology_path("two_nodes_mixed_nic").exists()
    assert resolve_topology_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"
