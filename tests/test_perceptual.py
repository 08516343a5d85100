"""The perceptual network of eq. (3): VGG16 features from a local torchvision-format state dict."""

import pytest
import torch
from safetensors.torch import save_file

from openvica_sim.models.perceptual import VGG16Features, load_vgg16


def torchvision_state(widths=(4, 8, 8, 16, 16)):
    torch.manual_seed(0)
    vgg = VGG16Features(widths)
    state = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(1000, 8)  # as in torchvision's file; ignored
    return vgg, state


def test_a_torchvision_state_dict_loads_with_its_widths_and_gives_the_five_lpips_layers(tmp_path):
    vgg, state = torchvision_state()
    torch.save(state, tmp_path / "vgg16.pth")
    loaded = load_vgg16(tmp_path / "vgg16.pth")
    frames = torch.rand(2, 3, 64, 64) * 2 - 1
    features = loaded(frames)
    assert [f.shape[1:] for f in features] == [(4, 64, 64), (8, 32, 32), (8, 16, 16), (16, 8, 8), (16, 4, 4)]
    for a, b in zip(features, vgg(frames)):
        torch.testing.assert_close(a, b)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_the_torchvision_layer_indices_are_kept():
    names = [k for k in VGG16Features().features.state_dict() if k.endswith("weight")]
    assert names[:3] == ["0.weight", "2.weight", "5.weight"] and names[-1] == "28.weight"  # torchvision's vgg16


def test_safetensors_load_too(tmp_path):
    _, state = torchvision_state()
    save_file(state, tmp_path / "vgg16.safetensors")
    assert load_vgg16(tmp_path / "vgg16.safetensors").widths == (4, 8, 8, 16, 16)


def test_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        load_vgg16(tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG16 state dict"):
        load_vgg16(tmp_path / "other.pth")
    _, state = torchvision_state()
    state["features.30.weight"] = torch.zeros(16, 16, 3, 3)  # a 14th conv: VGG19-like
    torch.save(state, tmp_path / "vgg19.pth")
    with pytest.raises(ValueError, match="VGG16 has 13"):
        load_vgg16(tmp_path / "vgg19.pth")
