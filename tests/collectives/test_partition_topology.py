"""Topology files' optional per-node ``groups`` (sub-node groups such as GCD pairs), and the
samples shipped for hierarchical partitioning."""

import textwrap

import pytest

from hpcrt import Device, TopologyFileError
from hpcrt.topology.yaml_file import load_topology_file

CPU = Device("cpu", None, "test cpu", 1 << 30)
LINKS = """
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 10}
  ib: {alpha_us: 2, bandwidth_gbytes_s: 5}
"""


def load(path, size=4):
    return load_topology_file(path, size, [CPU] * size, ["host"] * size)


def write(tmp_path, nodes):
    path = tmp_path / "topo.yaml"
    path.write_text(textwrap.dedent(nodes) + LINKS)
    return path


def test_shipped_samples_for_partitioning():
    pairs = load("two_nodes_gcd_pairs")
    assert pairs.groups == ((0, 1), (2, 3)) and pairs.nodes == ["node-a", "node-b"]
    interleaved = load("two_nodes_interleaved")
    assert [r.node for r in interleaved.ranks] == ["node-a", "node-b", "node-a", "node-b"]
    emulated = load("two_nodes_emulated")
    assert emulated.emulate and emulated.groups == ((0, 1), (2, 3)) and emulated.link_class(1, 2) == "ib"


def test_groups_may_be_interleaved_inside_a_node(tmp_path):
    topo = load(write(tmp_path, """
        nodes:
          - {name: a, ranks: [0, 1, 2, 3], nic: {class: ib}, groups: [[0, 2], [1, 3]]}
        """))
    assert topo.groups == ((0, 2), (1, 3))


@pytest.mark.parametrize("groups, expected", [
    ("[[0, 1], [2]]", "exactly once"),
    ("[[0, 1], [1, 2, 3]]", "exactly once"),
    ("[[0, 1], [2, 4]]", "exactly once"),
    ("[]", "non-empty list"),
    ("[[0, 1], []]", "non-empty list"),
    ("{a: 1}", "non-empty list"),
])
def test_bad_groups_name_the_file_and_the_key(tmp_path, groups, expected):
    path = write(tmp_path, f"""
        nodes:
          - {{name: a, ranks: 4, nic: {{class: ib}}, groups: {groups}}}
        """)
    with pytest.raises(TopologyFileError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "key 'nodes[0].groups'" in message and expected in message, message
