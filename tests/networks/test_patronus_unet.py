from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from monai_patronus.networks import PatronusUNet, PrototypeEncoder

CASES = [(2, (16, 16)), (3, (8, 8, 8))]


from tests._helpers import randomize_zero_init as _perturb_output_conv
from tests._helpers import tiny_patronus as _net


@pytest.mark.parametrize("spatial_dims, shape", CASES)
def test_shapes_and_condition_routes_agree(spatial_dims, shape):
    net = _net(spatial_dims).eval()
    _perturb_output_conv(net)
    x, x0 = torch.randn(2, 1, *shape), torch.rand(2, 1, *shape) * 2 - 1
    t = torch.tensor([10, 500])
    by_image = net(x, t, image=x0)
    assert by_image.shape == x.shape
    s = net.encode(x0)
    assert s.shape == (2, 6)
    torch.testing.assert_close(net(x, t, activations=s), by_image)
    torch.testing.assert_close(net(x, t, context=x0), by_image)
    torch.testing.assert_close(net(x, t, context=s), by_image)
    torch.testing.assert_close(net(x, t, activations=s[:1]), net(x, t, activations=s[:1].expand(2, -1)))


@pytest.mark.parametrize("spatial_dims, shape", CASES)
def test_conditioning_changes_output(spatial_dims, shape):
    net = _net(spatial_dims).eval()
    _perturb_output_conv(net)
    x, t = torch.randn(2, 1, *shape), torch.tensor([100, 100])
    s = torch.rand(2, 6)
    out = net(x, t, activations=s)
    torch.testing.assert_close(net(x, t, activations=s.clone()), out)
    s2 = s.clone()
    s2[:, 3] += 1.0
    assert (net(x, t, activations=s2) - out).abs().max() > 1e-4


@pytest.mark.parametrize("spatial_dims, shape", CASES)
def test_denoising_loss_gradient_reaches_encoder_and_prototypes(spatial_dims, shape):
    net = _net(spatial_dims)
    _perturb_output_conv(net)
    x0 = torch.rand(2, 1, *shape) * 2 - 1
    noise = torch.randn_like(x0)
    loss = ((net(x0 + noise, torch.tensor([3, 700]), image=x0) - noise) ** 2).mean()
    loss.backward()
    enc = net.prototype_encoder
    assert enc.prototypes.grad is not None and enc.prototypes.grad.abs().sum() > 0
    for layer in enc.features:
        if hasattr(layer, "weight"):
            assert layer.weight.grad.abs().sum() > 0
    assert net.class_embedding[0].weight.grad.abs().sum() > 0


def test_paper_configuration_is_expressible():
    enc = PrototypeEncoder(2, 3, num_prototypes=100, preset="small")
    net = PatronusUNet(2, 3, enc, channels=(64, 128, 256, 256), num_res_blocks=2, norm_num_groups=8, dropout=0.1)
    assert isinstance(net, DiffusionModelUNet)
    lin1, act, lin2 = net.class_embedding
    assert (lin1.in_features, lin1.out_features, lin2.out_features) == (100, 256, 256)
    assert isinstance(act, torch.nn.SiLU)
    resblocks = [m for m in net.modules() if type(m).__name__ == "DiffusionUNetResnetBlock"]
    assert len(resblocks) == 4 * 2 + 4 * 3 + 2  # down (2 per level), up (3 per level), middle (2)
    assert all(len(b.conv2._forward_pre_hooks) == 1 for b in resblocks)
    assert all(m.num_groups == 8 for m in net.modules() if isinstance(m, torch.nn.GroupNorm))
    assert not any("attention" in name for name, _ in net.named_modules() if name != "middle_block.attention")
    assert isinstance(net.middle_block.attention, torch.nn.Identity)
    assert "SpatialAttentionBlock" in {type(m).__name__ for m in PatronusUNet(2, 3, enc, mid_attention=True).modules()}
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32), torch.tensor([5]), image=torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_state_dict_keys_are_monais_plus_encoder():
    net = _net(2, dropout=0.1)
    plain = DiffusionModelUNet(2, 1, 1, num_res_blocks=1, channels=(8, 16), attention_levels=(False, False),
                               norm_num_groups=4, num_class_embeds=6)
    ours = {k for k in net.state_dict() if not k.startswith(("prototype_encoder.", "class_embedding."))}
    theirs = {k for k in plain.state_dict() if not k.startswith(("class_embedding.", "middle_block.attention."))}
    assert ours == theirs


def test_dropout_active_only_in_training():
    net = _net(2, dropout=0.5)
    _perturb_output_conv(net)
    x, t, s = torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.rand(2, 6)
    net.train()
    assert (net(x, t, activations=s) - net(x, t, activations=s)).abs().max() > 1e-6
    net.eval()
    torch.testing.assert_close(net(x, t, activations=s), net(x, t, activations=s))
    assert all(len(m._forward_pre_hooks) == 0 for m in _net(2, dropout=0.0).modules())


def test_bf16_network_with_float32_vector():
    net = _net(2).to(torch.bfloat16).eval()
    out = net(torch.randn(1, 1, 16, 16, dtype=torch.bfloat16), torch.tensor([3]), activations=torch.rand(1, 6))
    assert out.dtype == torch.bfloat16


def test_invalid_arguments():
    enc2 = PrototypeEncoder(2, 1, num_prototypes=4, preset="small")
    with pytest.raises(TypeError, match="encoder must be a PrototypeEncoder"):
        PatronusUNet(2, 1, torch.nn.Identity())
    with pytest.raises(ValueError, match="spatial_dims"):
        PatronusUNet(3, 1, enc2, channels=(8, 16), norm_num_groups=4)
    with pytest.raises(ValueError, match=r"in_channels \(1\) != in_channels \(3\)"):
        PatronusUNet(2, 3, enc2, channels=(8, 16), norm_num_groups=4)
    with pytest.raises(ValueError, match="dropout must be a float in \\[0, 1\\), got 1.5"):
        PatronusUNet(2, 1, enc2, channels=(8, 16), norm_num_groups=4, dropout=1.5)
    with pytest.raises(ValueError, match="channels"):
        PatronusUNet(2, 1, enc2, channels=8)


def test_invalid_conditions():
    net = _net(2)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="exactly one of context, image or activations"):
        net(x, t)
    with pytest.raises(ValueError, match="exactly one"):
        net(x, t, image=x, activations=torch.rand(2, 6))
    with pytest.raises(ValueError, match=r"shape \(2, 6\).*got \(2, 5\)"):
        net(x, t, activations=torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"got \(2, 1, 8, 8\)"):
        net(x, t, image=torch.randn(2, 1, 8, 8))
    with pytest.raises(TypeError, match="floating point"):
        net(x, t, activations=torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(TypeError, match="activations must be a torch.Tensor"):
        net(x, t, activations=[[0.0] * 6] * 2)
