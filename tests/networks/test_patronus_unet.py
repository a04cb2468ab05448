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
        assert net(torch.randn(1, 3, 32, 32), torch.tensor([5]), image=torch.randn(1, 3, 32, 32)).shape == (
            1,
            3,
            32,
            32,
        )


def test_state_dict_keys_are_monais_plus_encoder():
    net = _net(2, dropout=0.1)
    plain = DiffusionModelUNet(
        2,
        1,
        1,
        num_res_blocks=1,
        channels=(8, 16),
        attention_levels=(False, False),
        norm_num_groups=4,
        num_class_embeds=6,
    )
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


# ---------------------------------------------------------------- condition_norm and condition_dropout
from tests._helpers import tiny_encoder  # noqa: E402


def _cond_net(condition_norm: bool = False, condition_dropout: float = 0.0) -> PatronusUNet:
    """The tiny 2-D net (K = 6) with the output convs randomised and, with dropout, a non-zero null condition."""
    net = PatronusUNet(
        2,
        1,
        tiny_encoder(2, 6),
        channels=(8, 16),
        num_res_blocks=1,
        norm_num_groups=4,
        dropout=0.0,
        condition_norm=condition_norm,
        condition_dropout=condition_dropout,
    )
    _perturb_output_conv(net)
    if net.null_condition is not None:
        with torch.no_grad():
            net.null_condition.normal_()
    return net


def _embedding_inputs(net, *args, **kwargs) -> torch.Tensor:
    """What the class-embedding MLP receives in one forward pass."""
    seen = []
    handle = net.class_embedding.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    try:
        net(*args, **kwargs)
    finally:
        handle.remove()
    (inputs,) = seen
    return inputs


def test_condition_norm_uses_batch_stats_in_training_and_running_stats_in_eval():
    net = _cond_net(condition_norm=True)
    assert isinstance(net.condition_norm, torch.nn.BatchNorm1d) and not net.condition_norm.affine
    bn = net.condition_norm
    x, t = torch.randn(8, 1, 16, 16), torch.randint(0, 1000, (8,))
    net.train()
    for _ in range(3):  # accumulate running statistics through the forward pass
        s = torch.rand(8, 6) * 3 + 5
        h = _embedding_inputs(net, x, t, activations=s)
        # batch statistics: every prototype column standardised over the batch
        torch.testing.assert_close(h, net.embedding_input(s), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
        torch.testing.assert_close(h.var(0, unbiased=False), torch.ones(6), atol=1e-3, rtol=0)
        torch.testing.assert_close(
            h, (s - s.mean(0)) / (s.var(0, unbiased=False) + bn.eps).sqrt(), atol=1e-5, rtol=1e-5
        )
    assert int(bn.num_batches_tracked) == 6  # 3 forwards + 3 embedding_input calls
    assert (bn.running_mean > 1.0).all() and not torch.allclose(bn.running_var, torch.ones(6))
    net.eval()
    s = torch.rand(3, 6) * 3 + 5
    expected = (s - bn.running_mean) / (bn.running_var + bn.eps).sqrt()
    torch.testing.assert_close(net.embedding_input(s), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_embedding_inputs(net, x[:3], t[:3], activations=s), expected, atol=1e-5, rtol=1e-5)
    # eval: one sample is fine and independent of the rest of the batch
    torch.testing.assert_close(net.embedding_input(s[1:2]), expected[1:2], atol=1e-6, rtol=1e-6)
    # without condition_norm the embedding sees raw s
    plain = _cond_net()
    assert isinstance(plain.condition_norm, torch.nn.Identity) and plain.null_condition is None
    assert torch.equal(plain.embedding_input(s), s)


def test_condition_norm_state_dict_holds_running_stats():
    keys = set(_cond_net().state_dict())
    normed = set(_cond_net(condition_norm=True).state_dict())
    assert normed - keys == {
        "condition_norm.running_mean",
        "condition_norm.running_var",
        "condition_norm.num_batches_tracked",
    }
    assert set(_cond_net(condition_dropout=0.1).state_dict()) - keys == {"null_condition"}
    # and it round-trips, running stats included
    src, dst = _cond_net(condition_norm=True), _cond_net(condition_norm=True)
    src.train()
    src.embedding_input(torch.rand(4, 6) * 2)
    dst.load_state_dict(src.state_dict())
    torch.testing.assert_close(dst.condition_norm.running_var, src.condition_norm.running_var)
    s = torch.rand(2, 6)
    torch.testing.assert_close(dst.eval().embedding_input(s), src.eval().embedding_input(s))


@pytest.mark.parametrize("condition_norm", [False, True])
def test_unconditional_rows_use_the_null_condition(condition_norm):
    net = _cond_net(condition_norm=condition_norm, condition_dropout=0.2)
    if condition_norm:  # give the running stats non-trivial values
        net.train()
        net.embedding_input(torch.rand(8, 6) * 3)
    net.eval()
    x, t = torch.randn(1, 1, 16, 16).expand(4, -1, -1, -1), torch.full((4,), 300)
    s = torch.rand(4, 6) * 3  # four different conditions, one noisy image
    mask = torch.tensor([True, True, False, False])
    with torch.no_grad():
        out = net(x, t, activations=s, unconditional=mask)
        # the masked rows ignore s: they agree with each other ...
        torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=1e-6)
        # ... and with MONAI's U-Net fed the null condition (brute force)
        null = DiffusionModelUNet.forward(net, x[:1], t[:1], class_labels=net.null_condition[None])
        torch.testing.assert_close(out[:1], null, atol=1e-5, rtol=1e-5)
        # the unmasked rows are the plain conditional prediction, which depends on s
        torch.testing.assert_close(out[2:], net(x[2:], t[2:], activations=s[2:]), atol=1e-5, rtol=1e-5)
        assert (out[2] - out[3]).abs().max() > 1e-4
        assert (out[0] - out[2]).abs().max() > 1e-4
        # the embedding input: null rows, then condition_norm(s)
        h = net.embedding_input(s, mask)
        assert torch.equal(h[:2], net.null_condition.detach().expand(2, -1))
        torch.testing.assert_close(h[2:], net.embedding_input(s[2:]))
        # an image condition is ignored the same way
        by_image = net(x, t, image=torch.randn(4, 1, 16, 16), unconditional=torch.ones(4, dtype=torch.bool))
        torch.testing.assert_close(by_image, null.expand(4, -1, -1, -1), atol=1e-5, rtol=1e-5)


def test_unconditional_needs_condition_dropout():
    net = _cond_net().eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="condition_dropout > 0"):
        net(x, t, activations=torch.rand(2, 6), unconditional=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="condition_dropout"):
        net.embedding_input(torch.rand(2, 6), torch.zeros(2, dtype=torch.bool))
    net(x, t, activations=torch.rand(2, 6), unconditional=None)  # None is always fine


def test_condition_dropout_nulls_random_rows_in_training_only():
    net = _cond_net(condition_dropout=0.5)
    x, t, s = torch.randn(8, 1, 16, 16), torch.randint(0, 1000, (8,)), torch.rand(8, 6) + 1.0
    null, cond = net.null_condition.detach(), net.embedding_input(s).detach()
    net.train()
    torch.manual_seed(1)
    h = _embedding_inputs(net, x, t, activations=s)
    nulled = (h == null).all(1)
    kept = (h == cond).all(1)
    assert bool((nulled ^ kept).all())  # every row is either the null condition or its own condition
    assert 0 < int(nulled.sum()) < 8, nulled
    torch.manual_seed(1)  # the mask is drawn from the global RNG: reproducible under a seed
    assert torch.equal(_embedding_inputs(net, x, t, activations=s), h)
    torch.manual_seed(1)
    expected_mask = torch.rand(8) < 0.5
    assert torch.equal(nulled, expected_mask)
    # an explicit mask overrides the random one in training too
    assert torch.equal(
        _embedding_inputs(net, x, t, activations=s, unconditional=torch.zeros(8, dtype=torch.bool)), cond
    )
    # eval: never nulled
    net.eval()
    for _ in range(3):
        assert torch.equal(_embedding_inputs(net, x, t, activations=s), cond)
    # and the null condition is learned: it gets a gradient from the nulled rows
    net.train()
    torch.manual_seed(1)
    net(x, t, activations=s).square().mean().backward()
    assert net.null_condition.grad is not None and net.null_condition.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(condition_dropout=1.0), ValueError, "condition_dropout must be a float in \\[0, 1\\).*got 1.0"),
        (dict(condition_dropout=-0.1), ValueError, "condition_dropout must be a float in \\[0, 1\\).*got -0.1"),
    ],
)
def test_invalid_condition_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        PatronusUNet(2, 1, tiny_encoder(2, 6), channels=(8, 16), num_res_blocks=1, norm_num_groups=4, **kwargs)
