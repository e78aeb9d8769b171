"""Offline behaviour: a missing weight fails at once when the network is not there, without retries."""

from __future__ import annotations

import socket

import pytest

from img2mesh.elevation.weights import loftr_weight
from img2mesh.errors import WeightsError
from img2mesh.generate.weights import syncdreamer_weight
from img2mesh.utils import network


@pytest.fixture
def no_network(monkeypatch):
    """Every host unreachable, and any download attempt a test failure."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(network, "_connects", lambda host, port: False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted although the network is known to be down")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    monkeypatch.setattr("img2mesh.utils.weights.hub_offline", lambda: False)


def test_a_missing_hub_weight_fails_without_trying_to_download(no_network, tmp_path, monkeypatch):
    monkeypatch.setattr("img2mesh.utils.weights.HubWeight.locate", lambda self: None)
    weight = syncdreamer_weight(["model:liuyuan-pal/SyncDreamer/syncdreamer-pretrain.ckpt"])
    with pytest.raises(WeightsError, match="no network: huggingface.co cannot be reached"):
        weight.download()


def test_missing_loftr_weights_fail_without_trying(no_network, monkeypatch):
    pytest.importorskip("kornia")
    monkeypatch.setattr("img2mesh.elevation.weights.LoftrWeight.locate", lambda self: None)
    import kornia.feature

    monkeypatch.setattr(kornia.feature, "LoFTR", lambda **kw: (_ for _ in ()).throw(AssertionError("tried")))
    with pytest.raises(WeightsError, match="no network: huggingface.co, cmp.felk.cvut.cz cannot be reached"):
        loftr_weight("indoor_new").load("cpu")


def test_the_probe_reports_a_closed_port_and_trusts_a_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a local port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    network._connects.cache_clear()
    assert network.unreachable([f"http://127.0.0.1:{port}/x"]) == "no network: 127.0.0.1 cannot be reached"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert network.unreachable([f"http://127.0.0.1:{server.getsockname()[1]}/x"]) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert network.unreachable([f"http://127.0.0.1:{port}/x"]) is None  # a proxy may reach what we cannot


def test_go_offline_sets_the_switch_huggingface_reads(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so the test's change is undone after it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not network.offline_requested()
    network.go_offline()
    assert network.offline_requested() and constants.HF_HUB_OFFLINE is True
