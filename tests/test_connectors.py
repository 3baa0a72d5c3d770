"""Connectors: every registry entry trains, and bad setups are explained before anything is built."""

import pytest
import torch
from torch import nn

from vlmsweep.config.errors import ConfigError, UnknownNameError
from vlmsweep.models.connectors import (
    CONNECTORS,
    Connector,
    build_connector,
    check_connector,
    connector_output_tokens,
    default_num_heads,
    space_to_depth,
)

V, L, T, N = 24, 32, 16, 3  # vision_dim, llm_dim, vision tokens (4x4 grid), images


def dims_for(name):
    # identity only exists when the widths already match
    return (L, L) if name == "identity" else (V, L)


def test_registry_has_exactly_the_documented_names():
    assert set(CONNECTORS) == {"linear", "identity", "ln_mlp", "fused_mlp_gelu", "resampler", "qformer", "pixel_shuffle",
                               "mlp1x_gelu", "mlp2x_gelu", "mlp3x_gelu", "mlp4x_gelu"}


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_every_connector_builds_runs_and_trains(name):
    torch.manual_seed(0)
    vdim, ldim = dims_for(name)
    assert check_connector(name, vdim, ldim, T) == []
    conn = build_connector(name, vdim, ldim, T)
    assert isinstance(conn, Connector)
    t_out = connector_output_tokens(name, T)
    assert conn.num_output_tokens == t_out

    feats = torch.randn(N, T, vdim, requires_grad=True)
    out = conn(feats)
    assert out.shape == (N, t_out, ldim)
    assert torch.isfinite(out).all()

    # A random-weighted loss: out.sum() would give zero gradients through a final LayerNorm.
    (out * torch.randn_like(out)).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    for pname, p in conn.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_mlp_layer_structure(depth):
    conn = build_connector(f"mlp{depth}x_gelu", V, L, T)
    layers = list(conn.modules())[2:]  # skip the connector and its Sequential
    kinds = [type(m) for m in layers]
    assert kinds == [nn.Linear] + [nn.GELU, nn.Linear] * (depth - 1)
    assert (layers[0].in_features, layers[0].out_features) == (V, L)
    assert all((m.in_features, m.out_features) == (L, L) for m in layers[1:] if isinstance(m, nn.Linear))


def test_linear_is_one_projection_and_mlp2x_matches_llava_size():
    assert sum(p.numel() for p in build_connector("linear", V, L, T).parameters()) == V * L + L
    mlp2 = build_connector("mlp2x_gelu", V, L, T)
    assert sum(p.numel() for p in mlp2.parameters()) == (V * L + L) + (L * L + L)


def test_ln_mlp_order():
    conn = build_connector("ln_mlp", V, L, T)
    assert [type(m) for m in conn.proj] == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear]


def test_identity_passes_features_through_and_has_no_weights():
    conn = build_connector("identity", L, L, T)
    feats = torch.randn(N, T, L)
    assert list(conn.parameters()) == []
    assert torch.equal(conn(feats), feats)


def test_identity_dim_mismatch_is_reported_with_both_numbers():
    problems = check_connector("identity", V, L, T)
    assert len(problems) == 1
    assert "vision_dim=24" in problems[0] and "llm_dim=32" in problems[0]
    with pytest.raises(ConfigError) as err:
        build_connector("identity", V, L, T)
    assert err.value.problems[0][0] == "model.connector"


def test_unknown_connector_name_lists_allowed_names():
    with pytest.raises(UnknownNameError) as err:
        check_connector("mlp2x", V, L, T)  # a prefix of a real name must not match
    msg = str(err.value)
    for name in CONNECTORS:
        assert name in msg
    for fn in (lambda: build_connector("MLP2X_GELU", V, L, T), lambda: connector_output_tokens("mlp9x_gelu", T)):
        with pytest.raises(UnknownNameError):
            fn()


def test_unknown_option_is_reported_and_rejected():
    problems = check_connector("resampler", V, L, T, {"num_querys": 8})
    assert problems == ["unknown option 'num_querys' for connector 'resampler'; allowed: depth, num_heads, num_queries"]
    assert check_connector("linear", V, L, T, {"factor": 2}) == [
        "unknown option 'factor' for connector 'linear'; allowed: (none)"]
    with pytest.raises(ConfigError) as err:
        build_connector("resampler", V, L, T, {"num_querys": 8})
    assert err.value.problems == [("model.connector.options.num_querys", problems[0])]
    with pytest.raises(ConfigError):
        connector_output_tokens("pixel_shuffle", T, {"fator": 2})


def test_output_tokens_rejects_bad_options_and_token_counts():
    for opts in ({"num_queries": 0}, {"num_queries": "8"}, {"num_queries": 2.0}):
        with pytest.raises(ConfigError) as err:
            connector_output_tokens("resampler", T, opts)
        assert err.value.problems[0][0] == "model.connector.options.num_queries"
    with pytest.raises(ConfigError):
        connector_output_tokens("linear", 0)


def test_bad_option_values_are_reported_not_raised():
    assert len(check_connector("resampler", V, L, T, {"num_queries": 0, "depth": "2"})) == 2
    assert len(check_connector("resampler", V, L, T, {"num_heads": True})) == 1
    assert check_connector("resampler", V, 30, T, {"num_heads": 4}) == ["num_heads=4 does not divide llm_dim=30"]
    assert len(check_connector("pixel_shuffle", V, L, T, {"factor": 0})) == 1
    assert len(check_connector("linear", V, L, T, options=[1, 2])) == 1
    assert len(check_connector("linear", 0, L, "16")) == 2


def test_resampler_options_set_token_count_depth_and_heads():
    conn = build_connector("resampler", V, L, T, {"num_queries": 5, "depth": 3})
    assert connector_output_tokens("resampler", T, {"num_queries": 5}) == 5
    assert conn(torch.randn(N, T, V)).shape == (N, 5, L)
    assert len(conn.blocks) == 3
    assert conn.blocks[0].attn.num_heads == 8
    assert build_connector("resampler", V, L, T, {"num_heads": 2}).blocks[0].attn.num_heads == 2
    assert [default_num_heads(d) for d in (32, 12, 6, 7)] == [8, 4, 2, 1]


def test_resampler_sees_token_positions():
    # Without a position embedding, shuffling the vision tokens would not change the output.
    torch.manual_seed(0)
    conn = build_connector("resampler", V, L, T)
    feats = torch.randn(1, T, V)
    shuffled = feats[:, torch.randperm(T)]
    assert not torch.allclose(conn(feats), conn(shuffled))


def test_qformer_options_set_token_count_layers_width_and_cross_attention():
    from transformers import Blip2QFormerModel

    conn = build_connector("qformer", V, L, T, {"num_queries": 5, "depth": 4, "hidden": 16, "num_heads": 2,
                                                "cross_attention_every": 2})
    assert connector_output_tokens("qformer", T, {"num_queries": 5}) == 5 == conn.num_output_tokens
    assert conn(torch.randn(N, T, V)).shape == (N, 5, L)
    assert isinstance(conn.qformer, Blip2QFormerModel) and conn.queries.shape == (1, 5, 16)
    cfg = conn.qformer.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.encoder_hidden_size) == (16, 4, 2, V)
    # BLIP-2's layout: cross-attention in layers 0, 2, … when it comes every 2nd layer
    assert [layer.has_cross_attention for layer in conn.qformer.encoder.layer] == [True, False, True, False]
    assert (conn.proj.in_features, conn.proj.out_features) == (16, L)
    # defaults: the LLM's width, every layer looking at the image
    default = build_connector("qformer", V, L, T)
    assert default.queries.shape == (1, 32, L) and all(x.has_cross_attention for x in default.qformer.encoder.layer)


def test_qformer_reads_the_image_but_not_the_order_of_its_tokens():
    """Its queries cross-attend to the features: another image changes the output. As in BLIP-2
    no position embedding is added (the tower's features carry their own), so the same tokens in
    another order give the same output."""
    torch.manual_seed(0)
    conn = build_connector("qformer", V, L, T, {"num_queries": 4}).eval()
    feats = torch.randn(2, T, V)
    with torch.no_grad():
        out = conn(feats)
        assert not torch.allclose(out[0], out[1])
        torch.testing.assert_close(conn(feats[:, torch.randperm(T)]), out, rtol=0, atol=1e-5)
        # one image's queries see that image alone: a batch computes what each image does alone
        torch.testing.assert_close(conn(feats[1:]), out[1:], rtol=0, atol=1e-6)


def test_qformer_bad_setup_is_explained():
    assert check_connector("qformer", V, L, T, {"num_heads": 5}) == \
        ["num_heads=5 does not divide the Q-Former's width 32 (llm_dim)"]
    assert check_connector("qformer", V, L, T, {"hidden": 12, "num_heads": 8}) == \
        ["num_heads=8 does not divide the Q-Former's width 12 (hidden)"]
    (problem,) = check_connector("qformer", V, L, T, {"depth": 1, "cross_attention_every": 2})
    assert "no layer would cross-attend" in problem
    with pytest.raises(ConfigError) as err:
        build_connector("qformer", V, L, T, {"num_queries": 0})
    assert err.value.problems[0][0] == "model.connector.options.num_queries"


def test_pixel_shuffle_token_counts():
    assert connector_output_tokens("pixel_shuffle", 64) == 16
    assert connector_output_tokens("pixel_shuffle", 64, {"factor": 4}) == 4
    assert connector_output_tokens("pixel_shuffle", 64, {"factor": 1}) == 64


def test_pixel_shuffle_bad_grid_is_reported():
    cls_token = check_connector("pixel_shuffle", V, L, 17)  # 16 patches + CLS
    assert len(cls_token) == 1 and "perfect square" in cls_token[0]
    odd_side = check_connector("pixel_shuffle", V, L, 36, {"factor": 4})  # 6x6 grid
    assert len(odd_side) == 1 and "not divisible by factor=4" in odd_side[0]
    with pytest.raises(ConfigError):
        connector_output_tokens("pixel_shuffle", 17)
    with pytest.raises(ConfigError) as err:
        build_connector("pixel_shuffle", V, L, 36, {"factor": 4})
    assert err.value.problems[0][0] == "model.connector.options.factor"


def grid_features(side, n=2):
    """Token at (row, col) of image i carries the features (row, col, i)."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    coords = torch.stack([rows, cols], dim=-1).reshape(side * side, 2).float()
    return torch.stack([torch.cat([coords, torch.full((side * side, 1), float(i))], -1) for i in range(n)])


@pytest.mark.parametrize("side,factor", [(4, 2), (6, 3), (8, 2), (8, 4)])
def test_space_to_depth_gathers_each_neighbourhood_in_order(side, factor):
    feats = grid_features(side)
    out = space_to_depth(feats, factor)
    g = side // factor
    assert out.shape == (2, g * g, factor * factor * 3)
    for img in range(2):
        for gi in range(g):
            for gj in range(g):
                token = out[img, gi * g + gj].reshape(factor * factor, 3)
                expected = [[gi * factor + fi, gj * factor + fj, img] for fi in range(factor) for fj in range(factor)]
                assert token.tolist() == expected


def test_space_to_depth_specific_token():
    # 4x4 grid, factor 2: output token 3 is the bottom-right 2x2 block, rows 2-3 x cols 2-3
    token = space_to_depth(grid_features(4, n=1), 2)[0, 3].reshape(4, 3)[:, :2]
    assert token.tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]


def test_pixel_shuffle_forward_is_linear_of_space_to_depth():
    torch.manual_seed(0)
    conn = build_connector("pixel_shuffle", V, L, 64, {"factor": 4})
    feats = torch.randn(N, 64, V)
    expected = space_to_depth(feats, 4) @ conn.proj.weight.T + conn.proj.bias
    assert torch.allclose(conn(feats), expected, atol=1e-5)
    assert conn.proj.in_features == V * 16
    with pytest.raises(ValueError):
        conn(torch.randn(N, 16, V))  # a different grid would reshape silently; it must refuse
